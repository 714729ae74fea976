//! loadgen end to end: the real binary against a real mosquitto (ephemeral port) and a
//! stand-in filter (see `common`), checking that the summary is exact and that each kind of
//! filter fault shows up as exactly the count it should.

mod common;

use common::{loadgen, Behaviour, Forwarder, Mosquitto, Run};

/// A fresh broker and stand-in filter, and one loadgen run (`args` split on spaces).
fn run_against(b: Behaviour, args: &str) -> (Mosquitto, Forwarder, Run) {
    let broker = Mosquitto::start();
    let fwd = Forwarder::start(broker.port, b);
    let run = loadgen(&broker.url(), &words(args));
    (broker, fwd, run)
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

fn ok() -> Behaviour {
    Behaviour::default()
}

#[test]
fn clean_run_is_exact() {
    let (_b, fwd, run) = run_against(
        ok(),
        "--count 3000 --alert-ratio 0.3 --devices 4 --connections 2 --qos 1",
    );
    assert_eq!(run.code, 0);
    assert_eq!(run.n("sent"), 3000);
    assert_eq!(
        fwd.get(|s| &s.telemetry),
        3000,
        "the filter saw every message"
    );
    let alerts = fwd.get(|s| &s.alerts);
    assert!((750..1250).contains(&alerts), "about 30% alerts: {alerts}");
    assert_eq!(
        run.n("expected_alerts"),
        alerts,
        "loadgen's verdicts are the filter's"
    );
    assert_eq!(run.n("received_alerts"), alerts);
    assert_eq!(
        (run.n("lost"), run.n("duplicates"), run.n("unexpected")),
        (0, 0, 0)
    );
    let s = run.summary.as_ref().unwrap();
    assert!(s["send_rate"].as_f64().unwrap() > 0.0);
    assert!(s["alert_rate"].as_f64().unwrap() > 0.0);
    let l = &s["latency_us"];
    for k in ["p50", "p90", "p99", "p999", "max"] {
        assert!(l[k].as_u64().unwrap() > 0, "{k}");
    }
    assert!(l["p50"].as_u64() <= l["p99"].as_u64() && l["p99"].as_u64() <= l["max"].as_u64());
    assert_eq!(s["latency_samples"].as_u64(), Some(alerts));
    assert_eq!(
        s["send_lag_us"]["max"].as_u64(),
        Some(0),
        "burst: no schedule to lag"
    );
    let hgrm = run.hgrm.as_deref().unwrap();
    assert!(hgrm.contains("Value     Percentile TotalCount 1/(1-Percentile)"));
    assert!(hgrm.contains(&format!("Total count    = {alerts:12}")));
    assert!(run.stdout.contains("PASS"));
}

#[test]
fn sensor_profile_and_pacing() {
    // The real sensor profile (no --alert-ratio), paced at 2000 msg/s over 3 connections.
    let (_b, fwd, run) = run_against(
        ok(),
        "--rate 2000 --duration 1500ms --devices 6 --connections 3 --qos 0",
    );
    assert_eq!(run.code, 0);
    assert_eq!(run.n("sent"), 3000);
    assert_eq!(fwd.get(|s| &s.telemetry), 3000);
    // Each sensor starts at 21 and climbs: most of 500 readings per device are above 25.
    let alerts = fwd.get(|s| &s.alerts);
    assert!(alerts > 2000 && alerts < 3000, "{alerts}");
    assert_eq!(run.n("expected_alerts"), alerts);
    assert_eq!(run.n("received_alerts"), alerts);
    assert_eq!((run.n("lost"), run.n("unexpected")), (0, 0));
    // Open loop at 2000/s: 3000 messages take about 1.5 s, not a burst.
    let send_s = run.summary.as_ref().unwrap()["send_s"].as_f64().unwrap();
    assert!(send_s > 1.4, "paced, took {send_s}s");
    // Paced messages record how late loadgen wrote them; burst runs have nothing to record.
    let lag = &run.summary.as_ref().unwrap()["send_lag_us"];
    assert!(lag["max"].as_u64().unwrap() >= lag["p50"].as_u64().unwrap());
    assert!(lag["p50"].as_u64().unwrap() > 0);
}

#[test]
fn alerts_of_an_earlier_run_are_stale_not_counted() {
    // A retained alert of an "earlier run" (seq 3, sentUs long past) reaches the sink when it
    // subscribes: it must neither mark seq 3 as received nor count as unexpected.
    let broker = Mosquitto::start();
    let fwd = Forwarder::start(broker.port, ok());
    fwd.publish_retained(
        "alerts/telemetry/dev-3",
        br#"{"machine":{"temperature":99.0},"seq":3,"device":"dev-3","sentUs":1000}"#,
    );
    let run = loadgen(&broker.url(), &words("--count 200 --alert-ratio 1"));
    assert_eq!(run.code, 0);
    assert_eq!(run.n("stale"), 1);
    assert_eq!(run.n("expected_alerts"), 200);
    assert_eq!(run.n("received_alerts"), 200);
    assert_eq!(
        (run.n("lost"), run.n("unexpected"), run.n("duplicates")),
        (0, 0, 0)
    );
    assert!(run.stdout.contains("stale alerts"));
}

#[test]
fn dropped_alerts_are_lost_exactly() {
    let b = Behaviour {
        drop_every: 10,
        ..ok()
    };
    let (_b, fwd, run) = run_against(b, "--count 4000 --alert-ratio 0.5 --qos 1");
    assert_eq!(run.code, 1, "lost alerts fail the run");
    let alerts = fwd.get(|s| &s.alerts);
    assert_eq!(run.n("expected_alerts"), alerts);
    assert_eq!(run.n("lost"), alerts / 10);
    assert_eq!(run.n("lost"), fwd.get(|s| &s.dropped));
    assert_eq!(run.n("received_alerts"), alerts - alerts / 10);
    assert_eq!((run.n("duplicates"), run.n("unexpected")), (0, 0));
    let first_lost = &run.summary.as_ref().unwrap()["first_lost"];
    assert_eq!(first_lost.as_array().unwrap().len(), 10);
    assert!(run.stdout.contains("FAIL"));
}

#[test]
fn duplicated_alerts_are_counted() {
    let b = Behaviour {
        duplicate_every: 7,
        ..ok()
    };
    let (_b, fwd, run) = run_against(b, "--count 3000 --alert-ratio 0.4 --qos 0");
    assert_eq!(
        run.code, 0,
        "duplicates are reported, they do not fail a run"
    );
    let alerts = fwd.get(|s| &s.alerts);
    assert_eq!(run.n("duplicates"), alerts / 7);
    assert_eq!(run.n("duplicates"), fwd.get(|s| &s.duplicated));
    assert_eq!(run.n("received_alerts"), alerts + alerts / 7);
    assert_eq!((run.n("lost"), run.n("unexpected")), (0, 0));
}

#[test]
fn a_lower_threshold_in_the_filter_shows_as_unexpected() {
    // The filter forwards everything above 20 while loadgen judges with 25: exactly the
    // alerts with 20 < t <= 25 are unexpected.
    let broker = Mosquitto::start();
    let b = Behaviour {
        threshold: 20.0,
        ..ok()
    };
    let fwd = Forwarder::start_with_band(broker.port, b, Some((20.0, 25.0)));
    let run = loadgen(
        &broker.url(),
        &words("--count 3000 --alert-ratio 0.3 --threshold 25"),
    );
    assert_eq!(run.code, 1);
    let band = fwd.get(|s| &s.in_band);
    assert!(band > 0);
    assert_eq!(run.n("unexpected"), band);
    assert_eq!(run.n("lost"), 0);
    assert_eq!(run.n("received_alerts"), run.n("expected_alerts") + band);
}

#[test]
fn twin_step_keeps_the_accounting_exact() {
    let (broker, fwd, run) = run_against(
        ok(),
        "--count 4000 --alert-ratio 0.5 --twin-step 40 --connections 2 --qos 1",
    );
    assert_eq!(run.code, 0);
    assert_eq!(fwd.get(|s| &s.patches), 1);
    let s = run.summary.as_ref().unwrap();
    assert_eq!(s["twin_step"].as_f64(), Some(40.0));
    assert_eq!(
        s["twin_version"].as_u64(),
        Some(1),
        "above the reported $version 0"
    );
    assert_eq!(run.n("expected_alerts"), fwd.get(|s| &s.alerts));
    assert_eq!(run.n("received_alerts"), run.n("expected_alerts"));
    assert_eq!(
        (run.n("lost"), run.n("unexpected"), run.n("duplicates")),
        (0, 0, 0)
    );

    // A second run reads the retained report ($version 1, threshold 40): its patch is
    // version 2, and --twin-restore sets the threshold back to its --threshold 40 (version 3).
    let run = loadgen(
        &broker.url(),
        &words("--count 2000 --alert-ratio 0.5 --threshold 40 --twin-step 30 --twin-restore"),
    );
    assert_eq!(run.code, 0);
    assert_eq!(
        run.summary.as_ref().unwrap()["twin_version"].as_u64(),
        Some(2)
    );
    assert_eq!((run.n("lost"), run.n("unexpected")), (0, 0));
    assert_eq!(fwd.get(|s| &s.patches), 3, "step and restore");

    // A run that assumes 25 while the filter reports 40 is warned, and fails.
    let run = loadgen(
        &broker.url(),
        &words("--count 100 --alert-ratio 0.5 --threshold 25 --drain-timeout 300ms"),
    );
    assert!(
        run.stderr.contains("reports TemperatureThreshold 40"),
        "{}",
        run.stderr
    );
    assert_eq!(run.code, 1);
}

#[test]
fn twin_step_on_a_paced_profile_run() {
    let (_b, fwd, run) = run_against(
        ok(),
        "--rate 4000 --count 4000 --twin-step 60 --devices 8 --connections 2",
    );
    assert_eq!(run.code, 0);
    assert_eq!(fwd.get(|s| &s.patches), 1);
    assert_eq!(run.n("expected_alerts"), fwd.get(|s| &s.alerts));
    assert_eq!((run.n("lost"), run.n("unexpected")), (0, 0));
    let s = run.summary.as_ref().unwrap();
    assert!(s["twin_pause_s"].as_f64().unwrap() > 0.0);
    // The schedule resumes after the pause instead of bursting the backlog: the send window
    // (pause excluded) stays about 4000 / 4000 s.
    assert!(s["send_s"].as_f64().unwrap() > 0.9, "{s}");
}

#[test]
fn a_filter_that_ignores_the_twin_is_caught() {
    // Reports the patch applied but keeps threshold 25: after the step to 40, the alerts in
    // (25, 40] are unexpected.
    let b = Behaviour {
        apply_twin: false,
        ..ok()
    };
    let (_b, _fwd, run) = run_against(b, "--count 4000 --alert-ratio 0.5 --twin-step 40");
    assert_eq!(run.code, 1);
    assert!(run.n("unexpected") > 0);
    assert_eq!(run.n("lost"), 0);
}

#[test]
fn no_filter_path_every_message_counts() {
    // loadgen → mosquitto → loadgen, with the sink on the input topics: MQTT 3.1.1 and 5.
    let broker = Mosquitto::start();
    for (v, q) in [("3", "1"), ("5", "0"), ("5", "1")] {
        let args = format!(
            "--count 5000 --alert-ratio 1 --alert-filter telemetry/# --mqtt-version {v} --qos {q} --sink-qos {q}"
        );
        let run = loadgen(&broker.url(), &words(&args));
        assert_eq!(run.code, 0, "MQTT {v} QoS {q}");
        assert_eq!(run.n("sent"), 5000);
        assert_eq!(run.n("expected_alerts"), 5000);
        assert_eq!(run.n("received_alerts"), 5000);
        assert_eq!(run.n("lost"), 0);
    }
}

fn azure() -> Behaviour {
    Behaviour {
        azure: true,
        ..ok()
    }
}

#[test]
fn azure_target_run_is_exact() {
    // Module input topics with the sensor's property bag in, the module's events out; the
    // stand-in checks every input topic with edgefilter's parser.
    let (_b, fwd, run) = run_against(
        azure(),
        "--target azure --count 3000 --alert-ratio 0.3 --devices 4 --connections 2 --qos 1",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.n("sent"), 3000);
    assert_eq!(fwd.get(|s| &s.telemetry), 3000);
    assert_eq!(
        fwd.get(|s| &s.bad_inputs),
        0,
        "every input topic as edgeHub delivers it"
    );
    let alerts = fwd.get(|s| &s.alerts);
    assert!((750..1250).contains(&alerts), "about 30% alerts: {alerts}");
    assert_eq!(run.n("expected_alerts"), alerts);
    assert_eq!(run.n("received_alerts"), alerts);
    assert_eq!(
        (run.n("lost"), run.n("duplicates"), run.n("unexpected")),
        (0, 0, 0)
    );
    assert_eq!(run.n("bad_properties"), 0);
    let s = run.summary.as_ref().unwrap();
    assert_eq!(s["target"], "azure");
    assert_eq!(s["latency_samples"].as_u64(), Some(alerts));
    assert!(run.stdout.contains("bad properties"));
    assert!(run.stdout.contains("PASS"));
}

#[test]
fn azure_target_counts_alerts_without_their_properties() {
    // Every 5th alert is sent without MessageType=Alert, and every 10th is dropped: the run
    // fails, with both counted exactly and the drop not mistaken for a property fault.
    let b = Behaviour {
        untagged_every: 5,
        drop_every: 10,
        ..azure()
    };
    let (_b, fwd, run) = run_against(
        b,
        "--target azure --count 2000 --alert-ratio 0.5 --qos 0 --drain-timeout 1s",
    );
    assert_eq!(run.code, 1);
    let alerts = fwd.get(|s| &s.alerts);
    assert_eq!(run.n("expected_alerts"), alerts);
    assert_eq!(run.n("lost"), alerts / 10);
    // Multiples of 10 are dropped, so the untagged ones that arrive are the odd multiples of 5.
    assert_eq!(run.n("bad_properties"), alerts / 5 - alerts / 10);
    assert_eq!(fwd.get(|s| &s.untagged), alerts / 5);
    assert_eq!((run.n("unexpected"), run.n("duplicates")), (0, 0));
    let s = run.summary.as_ref().unwrap();
    let first = s["first_bad_properties"].as_str().unwrap();
    assert!(
        first.starts_with(
            "devices/dev1/modules/edgefilter/messages/events/%24.on=output1&sequenceNumber="
        ),
        "{first}"
    );
    assert!(run.stdout.contains("bad properties"));
}

#[test]
fn azure_no_filter_path_without_the_property_check() {
    // The sink reads the module's input topics themselves: every message counts, and their
    // bags (inputs, not outputs) are not checked.
    let broker = Mosquitto::start();
    let args = "--target azure --no-property-check --alert-filter devices/dev1/modules/edgefilter/inputs/# \
                --count 3000 --alert-ratio 1 --connections 2 --qos 1";
    let run = loadgen(&broker.url(), &words(args));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        (run.n("sent"), run.n("received_alerts"), run.n("lost")),
        (3000, 3000, 0)
    );
    assert_eq!(run.n("bad_properties"), 0);
    assert!(run.stdout.contains("not checked"));
    // With the check, input topics are not the module's events: every alert is flagged.
    let run = loadgen(
        &broker.url(),
        &words(&args.replace("--no-property-check", "")),
    );
    assert_eq!(run.code, 1);
    assert_eq!((run.n("lost"), run.n("bad_properties")), (0, 3000));
}

#[test]
fn azure_target_with_other_ids_reaches_no_filter() {
    // The stand-in serves dev1/edgefilter: a run for another module's input is never ready.
    let broker = Mosquitto::start();
    let _fwd = Forwarder::start(broker.port, azure());
    let run = loadgen(
        &broker.url(),
        &words("--target azure --module-id other --count 10 --ready-timeout 600ms"),
    );
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("devices/dev1/modules/other/messages/events/#"),
        "{}",
        run.stderr
    );
}

#[test]
fn setup_errors_exit_2_with_one_line() {
    // Nothing listens on this port (it was just released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = loadgen(&format!("mqtt://127.0.0.1:{port}"), &["--count", "10"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"));
    assert!(run.summary.is_none());

    // A broker but no filter: the probe never comes back.
    let broker = Mosquitto::start();
    let run = loadgen(&broker.url(), &words("--count 10 --ready-timeout 600ms"));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("not ready"), "{}", run.stderr);

    let run = loadgen(&broker.url(), &words("--target azure --twin-step 30"));
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr.trim(),
        "loadgen: --twin-step is not supported with --target azure: the module twin is edgeHub's"
    );
    let run = loadgen(&broker.url(), &words("--qos 2"));
    assert_eq!(run.code, 2);
}

#[test]
fn a_broken_alert_subscription_ends_the_run_with_exit_2() {
    // Mid-run, another client connects with the sink's client id: the broker drops the sink
    // (session takeover), and loadgen must stop with one clear error instead of reporting.
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    use std::time::Duration;
    let broker = Mosquitto::start();
    let _fwd = Forwarder::start(broker.port, ok());
    let (watch, mut conn) = Client::new(MqttOptions::new("watch", "127.0.0.1", broker.port), 10);
    watch.subscribe("telemetry/dev-0", QoS::AtMostOnce).unwrap();
    let url = broker.url();
    let lg = std::thread::spawn(move || {
        loadgen(
            &url,
            &words("--rate 500 --duration 20s --client-id kicked --drain-timeout 1s"),
        )
    });
    // The first telemetry message of the run (the probe goes to another device) means the
    // run has started.
    for ev in conn.iter() {
        if let Ok(Event::Incoming(Packet::Publish(_))) = ev {
            break;
        }
    }
    let mut opts = MqttOptions::new("kicked-sink", "127.0.0.1", broker.port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (_takeover, mut tconn) = Client::new(opts, 10);
    for ev in tconn.iter() {
        if let Ok(Event::Incoming(Packet::ConnAck(_))) = ev {
            break;
        }
    }
    let run = lg.join().unwrap();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("closed the connection"),
        "{}",
        run.stderr
    );
    assert!(run.summary.is_none());
}

#[test]
fn report_files_hold_the_run_per_second() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("run.svg");
    let page = dir.path().join("run.html");
    let broker = Mosquitto::start();
    let _fwd = Forwarder::start(broker.port, ok());
    let svg_arg = svg.to_str().unwrap();
    // Paced over ~2.5 s, so the timeline has several one-second rows.
    let run = loadgen(
        &broker.url(),
        &words(&format!(
            "--rate 2000 --duration 2500ms --alert-ratio 0.5 --qos 1 --report {svg_arg}"
        )),
    );
    assert_eq!(run.code, 0);
    let text = std::fs::read_to_string(&svg).expect("--report wrote the SVG");
    let doc = roxmltree::Document::parse(&text).expect("well-formed SVG");
    let texts: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    for want in [
        "sent",
        "alerts received",
        "p50",
        "p99",
        "latency at percentile",
    ] {
        assert!(texts.iter().any(|t| t.trim() == want), "{want}");
    }
    // The throughput line has a point per second of the run, at about the paced rate.
    let caption = texts
        .iter()
        .find(|t| t.trim().starts_with("Throughput per second"))
        .unwrap_or_else(|| panic!("no throughput caption in {texts:?}"));
    assert!(caption.contains("5000 sent"), "{caption}");
    let run = loadgen(
        &broker.url(),
        &words(&format!(
            "--count 500 --alert-ratio 0.5 --report {}",
            page.to_str().unwrap()
        )),
    );
    assert_eq!(run.code, 0);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
    assert!(
        html.contains("result           PASS"),
        "the summary table is in the page"
    );
}

#[test]
fn report_needs_a_known_extension() {
    let broker = Mosquitto::start();
    let run = loadgen(&broker.url(), &words("--count 10 --report run.png"));
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--report"), "{}", run.stderr);
}
