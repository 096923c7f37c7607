//! The `simulate` command line: help, validation before the run, JSON and shards.

use std::process::{Command, Output};

fn simulate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_simulate"))
        .args(args)
        .env_remove("EFFECTFUL_SEED")
        .output()
        .expect("the simulate binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("simulate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn help_explains_every_flag_and_exits_zero() {
    let output = simulate(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    for flag in [
        "--clients",
        "--duration",
        "--seed",
        "--seeds",
        "--shard",
        "--faults",
        "--swarm",
        "--trace",
        "--overwrite",
        "--check-determinism",
        "--json",
        "--help",
    ] {
        assert!(
            help.contains(flag),
            "--help does not mention {flag}:\n{help}"
        );
    }
}

#[test]
fn nonsense_runs_are_refused_before_anything_runs_with_status_2() {
    for (args, says) in [
        (&["--clients", "0"][..], "--clients 0"),
        (&["--duration", "0s"][..], "--duration 0"),
        (&["--faults", "--swarm"][..], "--faults and --swarm"),
        (&["--shard", "3/2"][..], "K/N"),
        (&["--shard", "0/2"][..], "K/N"),
        (&["--bogus"][..], "unknown flag"),
        (&["--clients", "4000000000", "--duration", "1h"][..], "MiB"),
    ] {
        let output = simulate(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{args:?} ran anyway");
    }
}

#[test]
fn an_unwritable_trace_path_fails_at_once() {
    let path = scratch("no-such-dir/x/trace.jsonl");
    let output = simulate(&[
        "--clients",
        "2",
        "--duration",
        "10s",
        "--trace",
        path.to_str().unwrap_or(""),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("cannot create"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn an_existing_trace_file_is_kept_unless_overwrite_is_given() {
    let path = scratch("existing.jsonl");
    std::fs::write(&path, "precious").expect("written");
    let p = path.to_str().unwrap_or("");
    let refused = simulate(&["--clients", "2", "--duration", "10s", "--trace", p]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr(&refused).contains("--overwrite"));
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("precious")
    );
    let replaced = simulate(&[
        "--clients",
        "2",
        "--duration",
        "10s",
        "--trace",
        p,
        "--overwrite",
    ]);
    assert_eq!(replaced.status.code(), Some(0), "{}", stderr(&replaced));
    let trace = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        trace.starts_with("{\"kind\":\"start\""),
        "{}",
        &trace[..trace.len().min(80)]
    );
}

#[test]
fn json_reports_the_run_in_one_object() {
    let output = simulate(&[
        "--clients",
        "3",
        "--duration",
        "20s",
        "--seeds",
        "0..3",
        "--faults",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let json = stdout(&output);
    assert!(
        json.trim_end().starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    for field in [
        "\"seeds\":{\"start\":0,\"end\":3,\"run\":3}",
        "\"faults\":\"chaos\"",
        "\"violations\":0",
        "\"faults_injected\":",
    ] {
        assert!(json.contains(field), "{field} missing from {json}");
    }
}

#[test]
fn shards_split_a_seed_range_into_disjoint_slices_that_cover_it() {
    let mut runs = Vec::new();
    for k in 1..=3 {
        let shard = format!("{k}/3");
        let output = simulate(&[
            "--clients",
            "2",
            "--duration",
            "5s",
            "--seeds",
            "10..20",
            "--shard",
            &shard,
            "--json",
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        runs.push(stdout(&output));
    }
    assert!(runs[0].contains("\"start\":10,\"end\":13"), "{}", runs[0]);
    assert!(runs[1].contains("\"start\":13,\"end\":16"), "{}", runs[1]);
    assert!(runs[2].contains("\"start\":16,\"end\":20"), "{}", runs[2]);
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(output),
            stderr(output)
        )
    })
}

const CHECKED: [&str; 6] = [
    "programs_end",
    "frames_are_protocol",
    "room_stored_once",
    "join_history",
    "live_in_order",
    "caught_up",
];

#[test]
fn the_report_names_each_invariant_with_its_checks_and_the_faults_by_kind() {
    let args = [
        "--clients",
        "8",
        "--duration",
        "10m",
        "--seeds",
        "0..2",
        "--faults",
    ];
    let output = simulate(&[&args[..], &["--json"]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    let invariants = report["invariants"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = invariants
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, CHECKED, "{report}");
    for row in &invariants {
        assert!(row["checks"].as_u64() > Some(0), "no checks made: {row}");
        assert_eq!(row["failed"].as_u64(), Some(0), "{row}");
        assert!(row["rule"].as_str().is_some_and(|r| r.len() > 20), "{row}");
    }
    // Every delivery and every acknowledgement is one live check.
    let live = invariants[4]["checks"].as_u64().unwrap_or_default();
    assert_eq!(report["deliveries"].as_u64(), Some(live), "{report}");
    assert!(report["acknowledged"].as_u64() > Some(0), "{report}");
    let kinds = report["fault_kinds"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let by_kind: u64 = kinds.values().filter_map(|v| v.as_u64()).sum();
    assert!(by_kind > 0, "{report}");
    assert_eq!(
        report["faults_injected"].as_u64(),
        Some(by_kind),
        "{report}"
    );
    assert!(
        report["definitions"]["acknowledged"]
            .as_str()
            .is_some_and(|d| d.contains("own sender")),
        "{report}"
    );

    let text = simulate(&args);
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    let text = stdout(&text);
    for says in [
        "faults:                    on, the chaos plan",
        "by kind:",
        "invariants checked:",
        "acknowledged messages:",
        "own sender",
    ] {
        assert!(text.contains(says), "{says:?} missing from\n{text}");
    }
    for name in CHECKED {
        let line = text.lines().find(|l| l.trim_start().starts_with(name));
        assert!(
            line.is_some_and(|l| l.contains(" checks, 0 failed: ")),
            "{name}:\n{text}"
        );
    }

    let quiet = simulate(&["--clients", "3", "--duration", "1m"]);
    assert!(
        stdout(&quiet).contains("faults:                    off; 0 injected"),
        "{}",
        stdout(&quiet)
    );
}

#[test]
fn check_determinism_adds_its_own_invariant_to_the_report() {
    let output = simulate(&[
        "--clients",
        "3",
        "--duration",
        "1m",
        "--seeds",
        "0..3",
        "--check-determinism",
        "--json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let report = json(&output);
    let last = report["invariants"]
        .as_array()
        .and_then(|rows| rows.last().cloned())
        .unwrap_or_default();
    assert_eq!(last["name"], "deterministic", "{report}");
    assert_eq!(last["checks"].as_u64(), Some(3), "{report}");
}

/// Ctrl-C stops the run, prints the report of the seeds done and exits 130.
#[test]
fn ctrl_c_prints_the_report_of_the_seeds_done_and_exits_130() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    for json_flag in [true, false] {
        let mut args = vec![
            "--clients",
            "3",
            "--duration",
            "30s",
            "--seeds",
            "0..100000000",
        ];
        if json_flag {
            args.push("--json");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_simulate"))
            .args(&args)
            .env_remove("EFFECTFUL_SEED")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the simulate binary runs");
        let mut errors = BufReader::new(child.stderr.take().expect("piped"));
        // Off a terminal, progress is a plain line every 2 s: wait for one that says
        // seeds are done.
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let read = errors.read_line(&mut line).expect("stderr reads");
            assert!(read > 0, "simulate ended before any progress: {seen}");
            seen.push_str(&line);
            if line.starts_with("progress: ") && !line.starts_with("progress: 0/") {
                break;
            }
        }
        let sent = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        errors.read_to_string(&mut seen).expect("stderr reads");
        let mut out = String::new();
        child
            .stdout
            .take()
            .expect("piped")
            .read_to_string(&mut out)
            .expect("stdout reads");
        let status = child.wait().expect("simulate ends");
        assert_eq!(status.code(), Some(130), "stderr: {seen}");
        assert!(seen.contains("interrupted by Ctrl-C after"), "{seen}");
        if json_flag {
            let report: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON report");
            assert_eq!(report["interrupted"], true, "{report}");
            let run = report["seeds"]["run"].as_u64().unwrap_or_default();
            assert!(run > 0 && run < 100_000_000, "{report}");
            assert_eq!(report["violations"].as_u64(), Some(0), "{report}");
            // The checks of the seeds done are all there.
            assert!(
                report["invariants"][0]["checks"].as_u64() >= Some(run),
                "{report}"
            );
        } else {
            assert!(out.contains("of 100000000, interrupted by Ctrl-C"), "{out}");
            assert!(out.contains("invariants checked:"), "{out}");
        }
    }
}

/// The JSON of a report without its wall time (which no two runs share).
fn without_wall_time(mut report: serde_json::Value) -> serde_json::Value {
    report
        .as_object_mut()
        .and_then(|o| o.remove("wall_s"))
        .expect("the report has a wall time");
    report
}

#[test]
fn merged_shard_reports_equal_the_unsharded_report() {
    let args = [
        "--clients",
        "4",
        "--duration",
        "2m",
        "--seeds",
        "3..17",
        "--faults",
        "--json",
    ];
    let whole = simulate(&args);
    assert_eq!(whole.status.code(), Some(0), "{}", stderr(&whole));
    let mut files = Vec::new();
    // Shards in any order: the merge sorts them by seed.
    for k in [3, 1, 4, 2] {
        let shard = format!("{k}/4");
        let output = simulate(&[&args[..], &["--shard", &shard]].concat());
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let path = scratch(&format!("merge-shard-{k}.json"));
        std::fs::write(&path, &output.stdout).expect("written");
        files.push(path.to_string_lossy().into_owned());
    }
    let merge_args: Vec<&str> = ["--merge", "--json"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let merged = simulate(&merge_args);
    assert_eq!(merged.status.code(), Some(0), "{}", stderr(&merged));
    let (merged, whole) = (json(&merged), json(&whole));
    assert!(whole["effects"].as_u64() > Some(500), "{whole}");
    assert_eq!(without_wall_time(merged), without_wall_time(whole));

    let text = simulate(&[&["--merge"][..], &merge_args[2..]].concat());
    assert_eq!(text.status.code(), Some(0), "{}", stderr(&text));
    assert!(stdout(&text).contains("seeds run:                 14 (3..17)"));
}

#[test]
fn merge_refuses_other_settings_overlaps_and_what_is_not_a_report() {
    let run = |extra: &[&str], name: &str| {
        let args = [
            &["--clients", "2", "--duration", "10s", "--json"][..],
            extra,
        ]
        .concat();
        let output = simulate(&args);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        let path = scratch(name);
        std::fs::write(&path, &output.stdout).expect("written");
        path.to_string_lossy().into_owned()
    };
    let a = run(&["--seeds", "0..4"], "refuse-a.json");
    let other_clients = {
        let args = [
            "--clients",
            "3",
            "--duration",
            "10s",
            "--seeds",
            "4..8",
            "--json",
        ];
        let path = scratch("refuse-clients.json");
        std::fs::write(&path, simulate(&args).stdout).expect("written");
        path.to_string_lossy().into_owned()
    };
    let faults = run(&["--seeds", "4..8", "--faults"], "refuse-faults.json");
    let overlapping = run(&["--seeds", "2..6"], "refuse-overlap.json");

    let huge = scratch("refuse-huge.json");
    std::fs::write(&huge, vec![b' '; 65 * 1024]).expect("written");
    let garbage = scratch("refuse-garbage.json");
    std::fs::write(&garbage, "{\"seeds\": [1, 2").expect("written");
    let deep = scratch("refuse-deep.json");
    std::fs::write(&deep, "[".repeat(10_000)).expect("written");
    // A report whose counts add to more than a u64 holds.
    let a_text = std::fs::read_to_string(&a).expect("read");
    let mut big: serde_json::Value = serde_json::from_str(&a_text).expect("JSON");
    // Every seed makes checks, so this cannot be added to another report's.
    big["invariants"][0]["checks"] = serde_json::json!(u64::MAX);
    big["seeds"] = serde_json::json!({"start": 4, "end": 8, "run": 4});
    let overflow = scratch("refuse-overflow.json");
    std::fs::write(&overflow, big.to_string()).expect("written");
    let mut lying = big.clone();
    lying["seeds"]["run"] = serde_json::json!(40);
    let lies = scratch("refuse-lies.json");
    std::fs::write(&lies, lying.to_string()).expect("written");

    let p = |path: &std::path::PathBuf| path.to_string_lossy().into_owned();
    for (files, says) in [
        (
            vec![a.clone(), other_clients],
            "only shards of one sweep merge",
        ),
        (vec![a.clone(), faults], "only shards of one sweep merge"),
        (vec![a.clone(), overlapping], "overlap"),
        (vec![a.clone(), a.clone()], "overlap"),
        (vec![a.clone(), p(&huge)], "larger than 64 KiB"),
        (vec![a.clone(), "/dev/zero".into()], "larger than 64 KiB"),
        (
            vec![a.clone(), p(&garbage)],
            "not a report of simulate --json",
        ),
        (vec![a.clone(), p(&deep)], "not a report of simulate --json"),
        (vec![a.clone(), p(&overflow)], "overflow"),
        (vec![a.clone(), p(&lies)], "cannot have run 40"),
        (vec![a.clone(), p(&scratch("missing.json"))], "cannot open"),
    ] {
        let args: Vec<&str> = std::iter::once("--merge")
            .chain(files.iter().map(String::as_str))
            .collect();
        let output = simulate(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{files:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(says),
            "{files:?}: {}",
            stderr(&output)
        );
        assert!(stdout(&output).is_empty(), "{files:?}");
    }
    for (args, says) in [
        (&["--merge"][..], "needs the report files"),
        (&["--merge", "a.json", "--faults"][..], "not --faults"),
    ] {
        let output = simulate(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(stderr(&output).contains(says), "{}", stderr(&output));
    }
}
