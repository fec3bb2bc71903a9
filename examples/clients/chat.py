"""Asks an OpenModel a chat question through its OpenAI-compatible API, with
the unmodified OpenAI client (pip install openai).

Usage: python chat.py BASE_URL MODEL QUESTION   (BASE_URL: http://HOST:8000/v1)

Prints the answer, the tokens it took, and the provenance headers every
answer carries: x-openmodel-model-digest and x-openmodel-ledger-index.
"""

import sys

import openai


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    base_url, model, question = sys.argv[1], sys.argv[2], sys.argv[3]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=model, temperature=0, max_tokens=96,
        messages=[{"role": "user", "content": question}])
    answer = raw.parse()
    print(f"  user: {question}")
    print(f"  assistant: {answer.choices[0].message.content.strip()}")
    print(f"  finish_reason: {answer.choices[0].finish_reason}; usage: {answer.usage.prompt_tokens} prompt + "
          f"{answer.usage.completion_tokens} completion tokens")
    print(f"  x-openmodel-model-digest: {raw.headers.get('x-openmodel-model-digest')}")
    print(f"  x-openmodel-ledger-index: {raw.headers.get('x-openmodel-ledger-index')}")


if __name__ == "__main__":
    main()
