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
