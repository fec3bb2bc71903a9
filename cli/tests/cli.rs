//! The `openmodel` command line as users and scripts meet it: help, the
//! kubectl plugin name, filters and formats, proofs, clear errors and exit
//! codes.

mod common;

use common::*;

#[test]
fn help_explains_commands_and_exit_codes() {
    let ws = Workspace::new();
    let help = ws.run(&["--help"]).ok();
    for needle in ["ledger", "audit", "Exit codes", "OPENMODEL_LEDGER"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let help = ws.run(&["audit", "log", "--help"]).ok();
    for needle in [
        "--model",
        "--kind",
        "--since",
        "--until",
        "--digest",
        "--dataset",
        "--actor",
        "table",
        "json",
        "csv",
    ] {
        assert!(help.contains(needle), "audit log --help lacks {needle:?}");
    }
    assert!(ws.run(&["--version"]).ok().starts_with("openmodel "));
}

#[test]
fn works_as_a_kubectl_plugin() {
    let ws = Workspace::new();
    // Installed as the docs say: a symlink named kubectl-openmodel.
    let plugin = ws.path("kubectl-openmodel");
    std::os::unix::fs::symlink(bin(), &plugin).unwrap();
    let out = std::process::Command::new(&plugin)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: kubectl openmodel"), "{help}");
    let out = std::process::Command::new(&plugin)
        .args(["audit", "log", "--ledger"])
        .arg(ws.ledger())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ledger.key"));
}

#[test]
fn log_filters_formats_and_pages() {
    let ws = Workspace::new();
    let mut lines = Vec::new();
    for i in 0..12 {
        lines.push(weights_json(
            "search",
            if i % 2 == 0 { "a" } else { "b" },
            i,
        ));
        lines.push(change_json(
            "search",
            "a",
            if i % 4 == 0 { "alice" } else { "bob" },
            i,
        ));
    }
    lines.push(weights_json("other", "c", 100));
    let idx = ws.record(&lines);
    assert_eq!(idx, (1..=25).collect::<Vec<u64>>());

    let table = ws.run(&[
        "audit",
        "log",
        "--model",
        "search/a",
        "--kind",
        "spec.changed",
        "--actor",
        "alice",
    ]);
    assert_eq!(table.code, 0);
    assert_eq!(table.stdout.lines().count(), 1 + 3, "{}", table.stdout);
    assert!(
        table
            .stdout
            .lines()
            .skip(1)
            .all(|l| l.contains("alice") && l.contains("UPDATE /spec/runtime/replicas"))
    );
    assert!(
        table
            .stderr
            .contains("3 matching entries in index range [0, 26) of the signed tree of size 26"),
        "{}",
        table.stderr
    );

    let json: serde_json::Value = serde_json::from_str(
        &ws.run(&[
            "audit", "log", "--model", "search/", "--limit", "5", "-o", "json",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(json["entries"].as_array().unwrap().len(), 5);
    assert_eq!(json["next"], 6);
    assert_eq!(json["treeSize"], 26);
    let all: serde_json::Value = serde_json::from_str(
        &ws.run(&[
            "audit", "log", "--model", "search/", "--limit", "5", "--all", "-o", "json",
        ])
        .ok(),
    )
    .unwrap();
    assert_eq!(all["entries"].as_array().unwrap().len(), 24);
    assert_eq!(all["scanned"], serde_json::json!({"from": 0, "to": 26}));

    let digest = format!("sha256:{:064x}", 100);
    let csv = ws
        .run(&["audit", "log", "--digest", &digest, "-o", "csv"])
        .ok();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with("25,"));

    let until_all = ws
        .run(&[
            "audit",
            "log",
            "--since",
            "2000-01-01",
            "--until",
            "2999-01-01",
            "-o",
            "json",
        ])
        .ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&until_all).unwrap()["entries"]
            .as_array()
            .unwrap()
            .len(),
        26
    );
    let none = ws
        .run(&["audit", "log", "--until", "2000-01-01", "-o", "json"])
        .ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&none).unwrap()["entries"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn proofs_verify_and_tampered_proofs_fail() {
    let ws = Workspace::new();
    ws.record(
        &(0..10)
            .map(|i| weights_json("ns", "m", i))
            .collect::<Vec<_>>(),
    );
    ws.run(&["audit", "proof", "4", "--out", "p4"]).ok();
    let text = std::fs::read_to_string(ws.path("p4")).unwrap();
    assert!(text.starts_with("c2sp.org/tlog-proof@v1\nextra "), "{text}");
    let out = ws
        .run(&["audit", "verify", "--proof", "p4", "--key", "key.pub"])
        .ok();
    assert!(
        out.contains("VERIFIED: entry 4 (weights.verified)"),
        "{out}"
    );
    // Swap in another entry's bytes: the proof no longer holds.
    let other = ws.run(&["audit", "proof", "5"]).ok();
    let extra5 = other.lines().nth(1).unwrap();
    let forged: String = text.replacen(text.lines().nth(1).unwrap(), extra5, 1);
    std::fs::write(ws.path("forged"), forged).unwrap();
    let run = ws.run(&["audit", "verify", "--proof", "forged", "--key", "key.pub"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("proof does not verify"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let ws = Workspace::new();
    let cases: Vec<(Vec<&str>, &str, i32, &str)> = vec![
        (
            vec!["audit", "record", "--key-file", "key"],
            "{not json",
            4,
            "invalid entry",
        ),
        (
            vec!["audit", "record", "--key-file", "key"],
            "",
            4,
            "no entry given",
        ),
        (
            vec!["audit", "record", "--key-file", "key"],
            r#"{"v":1,"kind":"weights.verified","cluster":"c","source":"cli","actor":null,"time":"2026-01-01T00:00:00Z","object":null,"data":{}}"#,
            4,
            "assigned by the ledger",
        ),
        (
            vec!["audit", "record", "--key-file", "key.pub"],
            "{}",
            4,
            "PRIVATE+KEY",
        ),
        (
            vec!["audit", "show", "99"],
            "",
            4,
            "index 99 is beyond the tree of size 1",
        ),
        (
            vec!["audit", "log", "--model", "nonamespace"],
            "",
            4,
            "namespace/name",
        ),
        (
            vec!["audit", "log", "--since", "last tuesday"],
            "",
            4,
            "RFC 3339",
        ),
        (
            vec!["audit", "log", "--kind", "weights.eaten"],
            "",
            4,
            "unknown kind",
        ),
        (
            vec!["audit", "verify", "--key", "garbage"],
            "",
            4,
            "verifier key has the form",
        ),
        (
            vec!["audit", "verify", "--bundle", "nowhere", "--key", "key.pub"],
            "",
            4,
            "checkpoint is missing",
        ),
        (
            vec!["audit", "log", "--frobnicate"],
            "",
            2,
            "unexpected argument",
        ),
        (
            vec!["ledger", "init", "--origin", "x", "--key-file", "key2"],
            "",
            4,
            "already exists",
        ),
        (
            vec!["--ledger", "missing.sqlite", "audit", "log"],
            "",
            4,
            "does not exist",
        ),
    ];
    for (args, stdin, code, needle) in cases {
        let run = ws.run_with_stdin(&args, stdin);
        assert_eq!(run.code, code, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(needle),
            "{args:?}: expected {needle:?} in {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            run.stderr
        );
    }
    // Errors change nothing.
    ws.run(&["audit", "verify", "--key", "key.pub"]).ok();
    assert_eq!(
        ws.run(&["audit", "log", "-o", "csv"]).ok().lines().count(),
        2
    );
}

#[test]
fn jsonl_record_stops_at_the_first_bad_line_keeping_earlier_ones() {
    let ws = Workspace::new();
    let input = format!(
        "{}\n{}\nnot json\n{}\n",
        weights_json("a", "b", 1),
        weights_json("a", "b", 2),
        weights_json("a", "b", 3)
    );
    let run = ws.run_with_stdin(&["audit", "record", "--jsonl", "--key-file", "key"], &input);
    assert_eq!(run.code, 4);
    assert_eq!(run.stdout, "1\n2\n");
    assert!(run.stderr.contains("line 3"), "{}", run.stderr);
    // Retrying the whole file is idempotent for the lines already logged.
    let run = ws.run_with_stdin(&["audit", "record", "--jsonl", "--key-file", "key"], &input);
    assert_eq!(run.stdout, "1\n2\n");
}

#[test]
fn two_writer_processes_share_one_ledger_safely() {
    let ws = Workspace::new();
    let spawn = |tag: &'static str| {
        let lines: String = (0..2000)
            .map(|i| weights_json("ns", tag, i) + "\n")
            .collect();
        let mut child = ws
            .command(&["audit", "record", "--jsonl", "--key-file", "key"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            std::io::Write::write_all(&mut stdin, lines.as_bytes()).unwrap()
        });
        child
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let mut indexes: Vec<u64> = Vec::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        indexes.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.parse::<u64>().unwrap()),
        );
    }
    indexes.sort_unstable();
    assert_eq!(
        indexes,
        (1..=4000).collect::<Vec<u64>>(),
        "indexes must be distinct and gap-free"
    );
    ws.run(&["audit", "verify", "--key", "key.pub"]).ok();
}

#[test]
fn inventory_and_export_work_on_a_ledger_file() {
    let ws = Workspace::new();
    let object = r#""object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"search","name":"minilm"}"#;
    let spec_changed = format!(
        r#"{{"v":1,"kind":"spec.changed","cluster":"test","source":"controller","actor":null,{object},"data":{{"operation":"CREATE","patch":[{{"op":"add","path":"/spec","value":{{"provenance":{{"datasets":[{{"name":"ms_marco","uri":"hf://datasets/ms_marco@1","role":"training"}}]}}}}}}]}}}}"#
    );
    let dataset = format!(
        r#"{{"v":1,"kind":"dataset.referenced","cluster":"test","source":"controller","actor":null,{object},"data":{{"name":"ms_marco","uri":"hf://datasets/ms_marco@1","role":"training"}}}}"#
    );
    let deployed = |n: u64| {
        format!(
            r#"{{"v":1,"kind":"model.deployed","cluster":"test","source":"controller","actor":null,{object},"data":{{"digest":"sha256:{n:064x}","replicas":1}}}}"#
        )
    };
    ws.record(&[spec_changed, dataset, deployed(1)]);
    let json =
        |args: &[&str]| -> serde_json::Value { serde_json::from_str(&ws.run(args).ok()).unwrap() };
    let first = json(&["audit", "show", "3", "-o", "json"]);
    let first_rollout = first["entry"]["time"].as_str().unwrap().to_owned();
    std::thread::sleep(std::time::Duration::from_millis(5));
    ws.record(&[deployed(2)]);

    // Then: the first rollout; the prefix up to then is proven against the latest checkpoint.
    let then = json(&["audit", "inventory", "--at", &first_rollout, "-o", "json"]);
    assert_eq!(then["entries"], 4);
    assert_eq!(then["treeSize"], 5);
    let minilm = &then["models"][0];
    assert_eq!(minilm["digest"]["digest"], format!("sha256:{:064x}", 1));
    assert_eq!(minilm["datasets"][0]["entry"], 2);
    // Now: the second.
    let now = json(&[
        "audit",
        "inventory",
        "--model",
        "search/minilm",
        "-o",
        "json",
    ]);
    assert_eq!(now["models"][0]["digest"]["index"], 4);
    let run = ws.run(&["audit", "inventory"]);
    assert!(run.stdout.starts_with("MODEL"), "{}", run.stdout);
    assert!(run.stderr.contains("1 model live at"), "{}", run.stderr);
    let csv = ws.run(&["audit", "inventory", "-o", "csv"]).ok();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(
        json(&["audit", "inventory", "--model", "other/", "-o", "json"])["models"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // An export recomputes the tree from the entries and verifies offline.
    let out = ws.run(&["audit", "export", "bundle"]).ok();
    assert!(out.contains("exported 5 entries"), "{out}");
    ws.run(&["audit", "verify", "--bundle", "bundle", "--key", "key.pub"])
        .ok();
    // A ledger file that is not signed by the key you pass is refused.
    let other = Workspace::new();
    let run = ws.run(&[
        "audit",
        "log",
        "--key",
        other.path("key.pub").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("not the key you trust"),
        "{}",
        run.stderr
    );
}

#[test]
fn admissions_no_controller_entry_confirms_are_shown_as_such() {
    let ws = Workspace::new();
    let object = r#""object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"search","name":"minilm","uid":"u1"}"#;
    let change = |source: &str, actor: &str, operation: &str, patch: &str, confirms: &str| {
        format!(
            r#"{{"v":1,"kind":"spec.changed","cluster":"test","source":"{source}","actor":{actor},{object},"data":{{{confirms}"operation":"{operation}","patch":{patch}}}}}"#
        )
    };
    let alice = r#"{"username":"alice","groups":["dev"]}"#;
    let create = r#"[{"op":"add","path":"/spec","value":{"runtime":{"replicas":1}}}]"#;
    let set =
        |n: u64| format!(r#"[{{"op":"replace","path":"/spec/runtime/replicas","value":{n}}}]"#);
    let indexes = ws.record(&[
        // 1: alice's create, 2: the controller's, confirming it.
        change("admission", alice, "CREATE", create, ""),
        change("controller", "null", "CREATE", create, r#""confirms":[1],"#),
        // 3: a change the API server refused after the webhook admitted it;
        // 4: one it stored, which 5 confirms.
        change("admission", alice, "UPDATE", &set(7), ""),
        change("admission", alice, "UPDATE", &set(2), ""),
        change(
            "controller",
            "null",
            "UPDATE",
            &set(2),
            r#""confirms":[4],"#,
        ),
    ]);
    assert_eq!(indexes, [1, 2, 3, 4, 5]);

    let table = ws.run(&["audit", "log"]).ok();
    let marked: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("[unconfirmed"))
        .collect();
    assert_eq!(marked.len(), 1, "{table}");
    assert!(marked[0].starts_with("3 "), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&ws.run(&["audit", "log", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["unconfirmedAdmissions"], serde_json::json!([3]));
    // A page that holds only the admission still finds its confirmation
    // further on.
    let page = ws
        .run(&["audit", "log", "--start", "4", "--limit", "1"])
        .ok();
    assert!(!page.contains("[unconfirmed"), "{page}");

    let verified = ws.run(&["audit", "verify", "--key", "key.pub"]).ok();
    assert!(
        verified.contains("1 admission entry no controller entry confirms (3)"),
        "{verified}"
    );
    let inventory = ws.run(&["audit", "inventory", "-o", "json"]);
    let live: serde_json::Value = serde_json::from_str(&inventory.stdout).unwrap();
    assert_eq!(
        live["models"][0]["unconfirmedAdmissions"],
        serde_json::json!([3])
    );
    assert!(
        inventory
            .stderr
            .contains("search/minilm: 1 admission entry"),
        "{}",
        inventory.stderr
    );

    // A controller entry may confirm; no other may.
    let forged = change("admission", alice, "UPDATE", &set(3), r#""confirms":[3],"#);
    let run = ws.run_with_stdin(&["audit", "record", "--key-file", "key"], &forged);
    assert!(
        run.stderr.contains("only the controller's entries confirm"),
        "{}",
        run.stderr
    );
}
