#!/usr/bin/env bash
# Lints every shell script of the repository (scripts/*.sh, images/*.sh,
# .ci/run and any other tracked or new file that is a shell script by name or
# by its #! line):
#
#   1. shellcheck -x, which must be clean (a warning that is a false positive
#      gets a targeted `# shellcheck disable=SCxxxx` with the reason beside
#      it). Needs shellcheck: scripts/setup.sh installs it (Debian package)
#      when run as root.
#   2. The SIGPIPE guard. Under `set -o pipefail`, a pipeline whose reader
#      stops reading early (head, grep -q, grep -m N, sed …q, awk with
#      exit) fails at random with exit status 141 when the writer
#      is still writing: the writer is killed by SIGPIPE, and pipefail reports
#      it. Such pipelines are refused here. Use a form that reads everything
#      instead: capture the output first (`out=$(cmd)`, then
#      `${out%%$'\n'*}` for its first line or `[[ $out == *text* ]]` for a
#      match), `sed -n 1p`, `awk 'NR == 1'` (no exit), `grep -q`/`grep -m1`
#      on a file or a here-string, or `find … -print -quit`. The check is a
#      plain grep over each line (comment lines skipped), so it can be
#      fooled; a line that is safe for another reason may end with the
#      comment `# sigpipe-ok: <why>`.
#
#   scripts/lint-shell.sh          lint everything (scripts/test.sh runs it)
#   scripts/lint-shell.sh FILE…    lint these files
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -gt 0 ]; then
  files=("$@")
else
  files=()
  while IFS= read -r -d '' file; do
    [ -f "$file" ] || continue
    case "$file" in
      *.sh | *.bash) files+=("$file") ;;
      *)
        first_line=
        IFS= read -r first_line <"$file" || true
        case "$first_line" in
          '#!'*bash* | '#!'*/sh | '#!'*' sh') files+=("$file") ;;
        esac
        ;;
    esac
  done < <(git ls-files -z --cached --others --exclude-standard)
fi
[ ${#files[@]} -gt 0 ] || { echo "lint-shell: no shell scripts found" >&2; exit 1; }

status=0

# 1. shellcheck
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "lint-shell: 'shellcheck' is missing; run scripts/setup.sh as root (it installs the Debian package) or apt-get install shellcheck" >&2
  exit 1
fi
if ! shellcheck -x "${files[@]}"; then
  echo "lint-shell: shellcheck found problems (above)" >&2
  status=1
fi

# 2. The SIGPIPE guard: a pipe into a reader that may stop early.
early_reader='\|[[:space:]]*(head([^[:alnum:]_-]|$)|grep[[:space:]]([^|]*[[:space:]])?(-[[:alnum:]]*[qm]|--quiet|--silent|--max-count)|sed[[:space:]]([^|]*[0-9/;$[:space:]'"'"'"])?q[0-9]*([[:space:]'"'"'";}]|$)|awk[[:space:]][^|]*[^[:alnum:]_]exit([^[:alnum:]_]|$))'
if hits=$(grep -nE "$early_reader" "${files[@]}" /dev/null | grep -vE '^[^:]+:[0-9]+:[[:space:]]*#' | grep -v '# sigpipe-ok:'); then
  echo "$hits" >&2
  echo "lint-shell: the pipelines above end in a reader that may stop early; under pipefail they fail at random with 141 (SIGPIPE). Capture the output first (see the head of scripts/lint-shell.sh)" >&2
  status=1
fi

if [ "$status" = 0 ]; then
  echo "lint-shell: ${#files[@]} shell scripts clean (shellcheck, SIGPIPE guard)"
fi
exit "$status"
