//! `kafka-gateway bench` as a user runs it: every strategy, two trials each,
//! on a few thousand records against the embedded broker (or the external
//! Kafka the suite is given in `KAFKA_GATEWAY_TEST_BOOTSTRAP_SERVERS`),
//! checked through its JSON report; and trials sized by calibration.
//! Nothing here asserts a speed: only that every run happened, counted
//! right, kept order where it must, and that the report is complete: every
//! strategy summarised over its trials, every ratio with its spread, CPU per
//! million records for the client and the gateway.

use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kafka-gateway");
const RECORDS: u64 = 3_000;
const TRIALS: u64 = 2;
const STRATEGIES: [&str; 6] = [
    "native",
    "direct",
    "gateway",
    "seed-futures-ordered",
    "seed-spawn",
    "seed-sync",
];

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

fn number(value: &Value, field: &str) -> f64 {
    value[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} in {value}"))
}

/// A median with its min and max, in order.
fn spread(value: &Value, field: &str) -> f64 {
    let spread = &value[field];
    let (median, min, max) = (
        number(spread, "median"),
        number(spread, "min"),
        number(spread, "max"),
    );
    assert!(min <= median && median <= max, "{field}: {spread}");
    median
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
        .args(["--trials", &TRIALS.to_string()])
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
    // Interleaved: every strategy once per trial.
    assert_eq!(names, [STRATEGIES, STRATEGIES].concat());
    let trials: Vec<u64> = main.iter().map(|r| count(r, "trial")).collect();
    assert_eq!(trials, [[1; 6], [2; 6]].concat());
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
        // CPU: a few thousand records may take less than a clock tick, so
        // only its presence is checked.
        assert!(number(run, "cpu_seconds") >= 0.0, "{strategy}: {run}");
        assert!(number(run, "cpu_s_per_million") >= 0.0, "{strategy}");
        if strategy == "gateway" {
            assert_eq!(run["gateway"], "process", "{run}");
            assert!(number(run, "gateway_cpu_s_per_million") >= 0.0, "{run}");
            assert!(number(run, "gateway_peak_rss_mib") > 0.0, "{run}");
        } else {
            assert!(run["gateway_cpu_seconds"].is_null(), "{strategy}");
        }
    }
    // Per strategy, over its trials.
    let summaries = report["strategies"].as_array().expect("strategies");
    let summarised: Vec<&str> = summaries
        .iter()
        .map(|s| s["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(summarised, STRATEGIES);
    for summary in summaries {
        let strategy = summary["strategy"].as_str().unwrap();
        assert_eq!(count(summary, "trials"), TRIALS, "{strategy}");
        assert!(spread(summary, "records_per_sec") > 0.0, "{strategy}");
        spread(summary, "p50_ms");
        spread(summary, "p99_ms");
        spread(summary, "cpu_s_per_million");
        spread(summary, "total_cpu_s_per_million");
        if strategy == "gateway" {
            spread(summary, "gateway_cpu_s_per_million");
        } else {
            assert!(summary["gateway_cpu_s_per_million"].is_null(), "{strategy}");
        }
        assert_eq!(count(summary, "records_failed"), 0, "{strategy}");
    }
    let at_load = runs(&report, "latency_at_load");
    let at_load_names: Vec<&str> = at_load
        .iter()
        .map(|r| r["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(
        at_load_names,
        ["gateway", "direct", "native"],
        "again at half the gateway's rate"
    );
    assert!(
        at_load
            .iter()
            .all(|r| r["rate_cap"].as_f64().unwrap() > 0.0)
    );
    let scaling = runs(&report, "scaling");
    assert_eq!(scaling.len(), 1);
    assert_eq!(count(scaling[0], "streams"), 2);
    assert!(
        runs(&report, "calibration").is_empty(),
        "--records: no calibration"
    );

    // Every ratio, as the median of the per-trial ratios with its spread.
    for ratio in [
        "gateway_vs_native",
        "gateway_vs_direct",
        "gateway_vs_seed_futures_ordered",
        "gateway_vs_seed_spawn",
        "gateway_vs_seed_sync",
        "direct_vs_native",
    ] {
        let value = &report["ratios"][ratio];
        assert!(spread(&report["ratios"], ratio) > 0.0, "{ratio}: {value}");
        assert!(number(value, "spread") >= 1.0, "{ratio}: {value}");
        assert_eq!(count(value, "trials"), TRIALS, "{ratio}: {value}");
    }
    assert_eq!(count(&report["method"], "trials"), TRIALS);
    assert_eq!(count(&report["method"], "records_per_trial"), RECORDS);
    assert!(
        report["method"]["cpu"].as_str().unwrap().contains("broker"),
        "the report says whose CPU is counted"
    );
    assert!(report["latency_at_load"]["p99_difference_ms"].is_f64());
    assert!(report["latency_at_load"]["p99_difference_vs_native_ms"].is_f64());
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1);

    for name in names {
        assert!(stdout.contains(name), "the table names {name}:\n{stdout}");
    }
    assert!(stdout.contains("gateway / native"), "{stdout}");
    assert!(stdout.contains("spread"), "{stdout}");
    assert!(stdout.contains("CPU s/M"), "{stdout}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("seed-sync") && svg.contains("CPU"),
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
fn calibrated_trials_and_the_gateway_process_measured_apart() {
    let json = std::env::temp_dir().join(format!(
        "kafka-gateway-bench-calibrated-{}.json",
        std::process::id()
    ));
    let output = Command::new(BIN)
        .args(["bench", "--strategies", "native,gateway", "--trials", "1"])
        .args(["--trial-seconds", "0.5", "--no-latency-at-load", "--json"])
        .arg(&json)
        .args(external_kafka())
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(number(&report["method"], "trial_seconds"), 0.5);
    // One calibration run per strategy sizes its trials: whole batches of
    // every stream (8 streams x 200 records by default).
    let calibration = runs(&report, "calibration");
    assert_eq!(calibration.len(), 2);
    for (calibration, trial) in calibration.iter().zip(runs(&report, "main")) {
        assert_eq!(calibration["strategy"], trial["strategy"]);
        assert_eq!(
            calibration["cut_short"], true,
            "time ends a calibration run"
        );
        assert!(count(calibration, "records_ok") > 0);
        let records = count(trial, "records_requested");
        assert!(records > 0 && records.is_multiple_of(1_600), "{records}");
        assert_eq!(count(trial, "records_ok"), records);
        assert_eq!(count(trial, "stored_order_violations"), 0);
    }
    let gateway = &runs(&report, "main")[1];
    assert_eq!(gateway["gateway"], "process");
    assert!(number(gateway, "gateway_peak_rss_mib") > 0.0, "{gateway}");
    assert!(
        number(gateway, "gateway_cpu_s_per_million") > 0.0,
        "{gateway}"
    );
    std::fs::remove_file(&json).unwrap();
}
