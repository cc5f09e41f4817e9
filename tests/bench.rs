//! `kafka-gateway bench` as a user runs it: every strategy on a few thousand
//! records against the embedded broker (or the external Kafka the suite is
//! given in `KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS`), checked through its JSON
//! report.
//! Nothing here asserts a speed: only that every run happened, counted
//! right, kept order where it must, and that the report is complete.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kafka-gateway");
const RECORDS: u64 = 3_000;

fn runs<'a>(report: &'a Value, group: &str) -> Vec<&'a Value> {
    report["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter(|run| run["group"] == group)
        .collect()
}

fn count(run: &Value, field: &str) -> u64 {
    run[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {run}"))
}

/// `--bootstrap-servers` for the suite's external Kafka, if it has one.
fn external_kafka() -> Vec<String> {
    match std::env::var("KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS") {
        Ok(servers) if !servers.is_empty() => vec!["--bootstrap-servers".into(), servers],
        _ => Vec::new(),
    }
}

#[test]
fn every_strategy_runs_and_reports() {
    let dir = std::env::temp_dir().join(format!("kafka-gateway-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, svg) = (dir.join("bench.json"), dir.join("bench.svg"));
    let output = Command::new(BIN)
        .args(["bench", "--records", &RECORDS.to_string(), "--streams", "4"])
        .args(["--batch", "100", "--sample", "1s", "--scaling", "2"])
        .args(external_kafka())
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench failed:\n{stdout}\n{stderr}");

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let main = runs(&report, "main");
    let names: Vec<&str> = main
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "direct",
            "gateway",
            "seed-futures-ordered",
            "seed-spawn",
            "seed-sync"
        ]
    );
    for run in runs(&report, "main")
        .into_iter()
        .chain(runs(&report, "latency_at_load"))
        .chain(runs(&report, "scaling"))
    {
        let strategy = run["strategy"].as_str().unwrap();
        let (handed, ok) = (count(run, "records_handed"), count(run, "records_ok"));
        assert_eq!(count(run, "records_requested"), RECORDS, "{strategy}");
        assert_eq!(count(run, "records_failed"), 0, "{strategy}: {run}");
        assert_eq!(ok, handed, "{strategy}: every record handed over is acked");
        if run["cut_short"] == false {
            assert_eq!(ok, RECORDS, "{strategy}: a whole run acks every record");
        } else {
            assert_eq!(
                strategy, "seed-sync",
                "only the sampled strategy stops early"
            );
            assert!(ok > 0, "{strategy}: a sample acks something");
        }
        // Read back: everything acked is stored, nothing lost to retention.
        let stored = &run["stored"];
        assert_eq!(count(stored, "records"), ok, "{strategy}: {stored}");
        assert_eq!(count(stored, "checked"), ok, "{strategy}");
        assert_eq!(count(stored, "dropped_by_retention"), 0, "{strategy}");
        if matches!(strategy, "gateway" | "direct") {
            assert_eq!(count(run, "ack_order_violations"), 0, "{strategy}");
            assert_eq!(count(run, "stored_order_violations"), 0, "{strategy}");
        }
        assert!(run["records_per_sec"].as_f64().unwrap() > 0.0, "{strategy}");
        let latency = &run["latency_ms"];
        assert!(
            latency["p50"].as_f64().unwrap() <= latency["p99"].as_f64().unwrap()
                && latency["p99"].as_f64().unwrap() <= latency["p999"].as_f64().unwrap(),
            "{strategy}: percentiles in order: {latency}"
        );
        assert!(run["peak_rss_mib"].as_f64().unwrap() > 0.0, "{strategy}");
    }
    let at_load = runs(&report, "latency_at_load");
    assert_eq!(at_load.len(), 2, "gateway and direct again at half rate");
    assert!(
        at_load
            .iter()
            .all(|r| r["rate_cap"].as_f64().unwrap() > 0.0)
    );
    let scaling = runs(&report, "scaling");
    assert_eq!(scaling.len(), 1);
    assert_eq!(count(scaling[0], "streams"), 2);

    for ratio in [
        "gateway_vs_direct",
        "gateway_vs_seed_sync",
        "gateway_vs_seed_futures_ordered",
    ] {
        assert!(
            report["ratios"][ratio].as_f64().is_some_and(|r| r > 0.0),
            "{ratio} in {}",
            report["ratios"]
        );
    }
    assert!(report["latency_at_load"]["p99_difference_ms"].is_f64());
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);

    for name in names {
        assert!(stdout.contains(name), "the table names {name}:\n{stdout}");
    }
    assert!(stdout.contains("gateway throughput:"), "{stdout}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("seed-sync"),
        "an SVG chart"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_exit_with_usage() {
    let output = Command::new(BIN)
        .args(["bench", "--strategies", "carrier-pigeon"])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("seed-futures-ordered"));
}

#[test]
fn a_gateway_process_reports_its_own_peak_rss() {
    let json = std::env::temp_dir().join(format!(
        "kafka-gateway-bench-process-{}.json",
        std::process::id()
    ));
    let output = Command::new(BIN)
        .args(["bench", "--strategies", "gateway", "--gateway-process"])
        .args(["--records", "1000", "--no-latency-at-load", "--json"])
        .arg(&json)
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let run = &report["runs"][0];
    assert_eq!(count(run, "records_ok"), 1_000);
    assert_eq!(count(run, "stored_order_violations"), 0);
    assert!(run["gateway_peak_rss_mib"].as_f64().unwrap() > 0.0, "{run}");
    std::fs::remove_file(&json).unwrap();
}
