//! One contract for the store, run against SQLite and PostgreSQL: same semantics on both.

use infrastructor_controller::auth::hash_token;
use infrastructor_controller::store::{
    IngestOutcome, IngestSample, JoinTokenError, NewApiTokenRow, NewDevice, Resolution,
    RetentionCutoffs, Store,
};
use infrastructor_e2e::{backends, temp_dir, Backend};

const T0: i64 = 1_800_000_000_000; // aligned to the hour

async fn open(backend: &Backend, dir: &tempfile::TempDir) -> Store {
    match backend {
        Backend::Sqlite => Store::open_sqlite(&dir.path().join("test.db"))
            .await
            .unwrap(),
        Backend::Postgres(url) => Store::open_postgres(url).await.unwrap(),
    }
}

fn device<'a>(id: &'a str, name: &'a str) -> NewDevice<'a> {
    NewDevice {
        id,
        name,
        kind: infrastructor_controller::domain::DeviceKind::Agent,
        ssh_address: None,
        ssh_user: None,
        ssh_host_key: None,
        hostname: Some(name),
        created_at_ms: T0,
    }
}

fn samples(series: &str, labels: &str, points: &[(i64, f64)]) -> Vec<IngestSample> {
    points
        .iter()
        .map(|(ts, value)| IngestSample {
            series: series.into(),
            labels: labels.into(),
            ts_ms: *ts,
            value: *value,
        })
        .collect()
}

/// Runs `check` once per backend with a fresh store.
macro_rules! contract {
    ($name:ident, |$store:ident| $body:block) => {
        #[tokio::test]
        async fn $name() {
            for backend in backends().await {
                let dir = temp_dir();
                let $store = open(&backend, &dir).await;
                eprintln!("backend: {backend:?}");
                $body
                $store.close().await;
            }
        }
    };
}

contract!(ingest_is_exactly_once_per_sequence, |store| {
    store.insert_device(&device("d1", "one")).await.unwrap();
    let batch = samples("cpu.usage_percent", "{}", &[(T0, 1.0), (T0 + 1000, 2.0)]);
    assert_eq!(
        store
            .ingest_batch("d1", 1, &batch, (0, 0), T0)
            .await
            .unwrap(),
        IngestOutcome::Stored
    );
    assert_eq!(
        store
            .ingest_batch("d1", 1, &batch, (0, 0), T0)
            .await
            .unwrap(),
        IngestOutcome::Duplicate
    );
    let later = samples("cpu.usage_percent", "{}", &[(T0 + 2000, 3.0)]);
    assert_eq!(
        store
            .ingest_batch("d1", 3, &later, (1, 5), T0)
            .await
            .unwrap(),
        IngestOutcome::Stored
    );
    // A gap (batch 2 was dropped by the agent's full spool) stays a gap; a late 2 is a replay.
    assert_eq!(
        store
            .ingest_batch("d1", 2, &later, (0, 0), T0)
            .await
            .unwrap(),
        IngestOutcome::Duplicate
    );
    let counts = store
        .count_samples("d1", "cpu.usage_percent")
        .await
        .unwrap();
    assert_eq!(counts, vec![(1.0, 1), (2.0, 1), (3.0, 1)]);
    let row = store.device_by_id("d1").await.unwrap().unwrap();
    assert_eq!(row.high_water_mark, 3);
    assert_eq!(
        (row.spool_dropped_batches, row.spool_dropped_samples),
        (1, 5),
        "loss is recorded"
    );
});

contract!(concurrent_replays_store_once, |store| {
    store.insert_device(&device("d1", "one")).await.unwrap();
    let batch = samples("cpu.usage_percent", "{}", &[(T0, 1.0)]);
    let attempts =
        futures::future::join_all((0..8).map(|_| store.ingest_batch("d1", 1, &batch, (0, 0), T0)))
            .await;
    let stored = attempts
        .iter()
        .filter(|r| matches!(r, Ok(IngestOutcome::Stored)))
        .count();
    assert_eq!(stored, 1, "{attempts:?}");
    assert_eq!(
        store
            .count_samples("d1", "cpu.usage_percent")
            .await
            .unwrap(),
        vec![(1.0, 1)]
    );
});

contract!(
    series_are_told_apart_by_labels_and_queried_in_buckets,
    |store| {
        store.insert_device(&device("d1", "one")).await.unwrap();
        let mut batch = samples(
            "disk.used_percent",
            r#"{"mount":"/"}"#,
            &[(T0, 10.0), (T0 + 10_000, 20.0), (T0 + 70_000, 40.0)],
        );
        batch.extend(samples(
            "disk.used_percent",
            r#"{"mount":"/var"}"#,
            &[(T0, 99.0)],
        ));
        store
            .ingest_batch("d1", 1, &batch, (0, 0), T0)
            .await
            .unwrap();
        let series = store.find_series("d1", "disk.used_percent").await.unwrap();
        assert_eq!(series.len(), 2);
        let root = series.iter().find(|s| s.labels.contains("\"/\"")).unwrap();
        let buckets = store
            .query_buckets(root.id, Resolution::Raw, T0, T0 + 120_000, 60_000)
            .await
            .unwrap();
        assert_eq!(buckets.len(), 2);
        assert_eq!(
            (
                buckets[0].bucket,
                buckets[0].avg,
                buckets[0].min,
                buckets[0].max,
                buckets[0].count
            ),
            (T0, 15.0, 10.0, 20.0, 2)
        );
        assert_eq!(
            (buckets[1].bucket, buckets[1].avg, buckets[1].count),
            (T0 + 60_000, 40.0, 1)
        );
        let latest = store.latest_samples("d1", &[]).await.unwrap();
        assert_eq!(latest.len(), 2);
        assert!(latest
            .iter()
            .any(|l| l.value == 40.0 && l.ts_ms == T0 + 70_000));
    }
);

contract!(latest_samples_of_every_device_in_one_query, |store| {
    for (id, name) in [("d1", "one"), ("d2", "two"), ("d3", "three")] {
        store.insert_device(&device(id, name)).await.unwrap();
    }
    let mut batch = samples("cpu.usage_percent", "{}", &[(T0, 5.0), (T0 + 10_000, 7.0)]);
    batch.extend(samples("load.1m", "{}", &[(T0, 0.5)]));
    batch.extend(samples(
        "disk.used_percent",
        r#"{"mount":"/"}"#,
        &[(T0, 50.0)],
    ));
    store
        .ingest_batch("d1", 1, &batch, (0, 0), T0)
        .await
        .unwrap();
    let batch = samples("cpu.usage_percent", "{}", &[(T0 + 20_000, 9.0)]);
    store
        .ingest_batch("d2", 1, &batch, (0, 0), T0)
        .await
        .unwrap();
    store.insert_device(&device("d4", "revoked")).await.unwrap();
    store
        .ingest_batch("d4", 1, &batch, (0, 0), T0)
        .await
        .unwrap();
    assert!(store.revoke_device("d4", T0).await.unwrap());

    let latest = store
        .latest_samples_of_all(&["cpu.usage_percent", "load.1m"])
        .await
        .unwrap();
    let got: Vec<(&str, &str, i64, f64)> = latest
        .iter()
        .map(|l| (l.device_id.as_str(), l.name.as_str(), l.ts_ms, l.value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("d1", "cpu.usage_percent", T0 + 10_000, 7.0),
            ("d1", "load.1m", T0, 0.5),
            ("d2", "cpu.usage_percent", T0 + 20_000, 9.0),
        ],
        "newest per series, named series only, d3 has none, revoked d4 left out"
    );
    let one = store
        .latest_samples("d1", &["disk.used_percent"])
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].device_id.as_str(), one[0].value), ("d1", 50.0));
});

contract!(rollups_match_raw_and_absorb_late_data, |store| {
    store.insert_device(&device("d1", "one")).await.unwrap();
    // Two 5-minute buckets in the same hour.
    let batch = samples(
        "load.1m",
        "{}",
        &[(T0, 1.0), (T0 + 60_000, 3.0), (T0 + 300_000, 10.0)],
    );
    store
        .ingest_batch("d1", 1, &batch, (0, 0), T0)
        .await
        .unwrap();
    assert_eq!(store.run_rollups(0, 100).await.unwrap(), 1);
    let id = store.find_series("d1", "load.1m").await.unwrap()[0].id;
    let five = store
        .query_buckets(id, Resolution::FiveMinutes, T0, T0 + 3_600_000, 300_000)
        .await
        .unwrap();
    assert_eq!(
        five.iter()
            .map(|b| (b.avg, b.min, b.max, b.count))
            .collect::<Vec<_>>(),
        vec![(2.0, 1.0, 3.0, 2), (10.0, 10.0, 10.0, 1)]
    );
    let hour = store
        .query_buckets(id, Resolution::OneHour, T0, T0 + 3_600_000, 3_600_000)
        .await
        .unwrap();
    assert_eq!((hour[0].min, hour[0].max, hour[0].count), (1.0, 10.0, 3));
    assert!((hour[0].avg - 14.0 / 3.0).abs() < 1e-9);

    // A late batch into an already rolled-up bucket: the bucket is recomputed, not doubled.
    let late = samples("load.1m", "{}", &[(T0 + 120_000, 5.0)]);
    store
        .ingest_batch("d1", 2, &late, (0, 0), T0)
        .await
        .unwrap();
    assert_eq!(store.run_rollups(0, 100).await.unwrap(), 1);
    assert_eq!(
        store.run_rollups(0, 100).await.unwrap(),
        0,
        "pending ranges are consumed"
    );
    let five = store
        .query_buckets(id, Resolution::FiveMinutes, T0, T0 + 300_000, 300_000)
        .await
        .unwrap();
    assert_eq!((five[0].avg, five[0].count), (3.0, 3));
});

contract!(retention_deletes_only_expired_data, |store| {
    store.insert_device(&device("d1", "one")).await.unwrap();
    let batch = samples("load.1m", "{}", &[(T0, 1.0), (T0 + 3_600_000, 2.0)]);
    store
        .ingest_batch("d1", 1, &batch, (0, 0), T0)
        .await
        .unwrap();
    store.run_rollups(0, 100).await.unwrap();
    let (raw, five, hour) = store
        .apply_retention(RetentionCutoffs {
            raw_before_ms: T0 + 1,
            rollup_5m_before_ms: T0 + 1,
            rollup_1h_before_ms: 0,
        })
        .await
        .unwrap();
    assert_eq!((raw, five, hour), (1, 1, 0));
    assert_eq!(
        store.count_samples("d1", "load.1m").await.unwrap(),
        vec![(2.0, 1)]
    );
});

contract!(join_tokens_are_single_use_and_expire, |store| {
    store
        .insert_join_token(&hash_token("good"), T0, T0 + 60_000, "test")
        .await
        .unwrap();
    store
        .insert_join_token(&hash_token("old"), T0 - 120_000, T0 - 60_000, "test")
        .await
        .unwrap();
    let first = store
        .enroll_with_join_token(&hash_token("good"), &device("a", "web"), T0)
        .await
        .unwrap();
    assert_eq!(first, Ok(()));
    let replay = store
        .enroll_with_join_token(&hash_token("good"), &device("b", "web"), T0)
        .await
        .unwrap();
    assert_eq!(replay, Err(JoinTokenError::Used));
    assert!(
        store.device_by_id("b").await.unwrap().is_none(),
        "a refused enrollment creates nothing"
    );
    let expired = store
        .enroll_with_join_token(&hash_token("old"), &device("c", "web"), T0)
        .await
        .unwrap();
    assert_eq!(expired, Err(JoinTokenError::Expired));
    let unknown = store
        .enroll_with_join_token(&hash_token("nope"), &device("d", "web"), T0)
        .await
        .unwrap();
    assert_eq!(unknown, Err(JoinTokenError::Unknown));

    // Racing enrollments with one token: exactly one wins.
    store
        .insert_join_token(&hash_token("race"), T0, T0 + 60_000, "test")
        .await
        .unwrap();
    let ids: Vec<String> = (0..6).map(|i| format!("race-{i}")).collect();
    let devices: Vec<_> = ids.iter().map(|id| device(id, "racer")).collect();
    let race_hash = hash_token("race");
    let results = futures::future::join_all(
        devices
            .iter()
            .map(|d| store.enroll_with_join_token(&race_hash, d, T0)),
    )
    .await;
    assert_eq!(
        results.iter().filter(|r| matches!(r, Ok(Ok(())))).count(),
        1,
        "{results:?}"
    );
});

contract!(device_names_are_unique_among_live_devices, |store| {
    store.insert_device(&device("a", "web")).await.unwrap();
    let error = store.insert_device(&device("b", "web")).await.unwrap_err();
    assert_eq!(
        error.kind(),
        infrastructor_controller::error::ErrorKind::Conflict
    );
    // Enrollment with a taken hostname gets a disambiguated name instead of failing.
    store
        .insert_join_token(&hash_token("t"), T0, T0 + 60_000, "test")
        .await
        .unwrap();
    store
        .enroll_with_join_token(&hash_token("t"), &device("c1234567-x", "web"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .device_by_id("c1234567-x")
            .await
            .unwrap()
            .unwrap()
            .name,
        "web-c1234567"
    );
    // Revocation hides the device and frees its name.
    assert!(store.revoke_device("a", T0).await.unwrap());
    assert!(!store.revoke_device("a", T0).await.unwrap());
    assert!(store.find_device("web").await.unwrap().is_none());
    assert!(store
        .device_by_id("a")
        .await
        .unwrap()
        .unwrap()
        .revoked_at_ms
        .is_some());
    store.insert_device(&device("d", "web")).await.unwrap();
});

fn token_row<'a>(
    id: &'a str,
    hash: &'a str,
    scope: &'a str,
    expires_at_ms: Option<i64>,
) -> NewApiTokenRow<'a> {
    NewApiTokenRow {
        id,
        name: id,
        owner: "alice",
        token_hash: hash,
        scope,
        requires_approval: id == "1",
        created_at_ms: T0,
        expires_at_ms,
    }
}

contract!(api_tokens_expire, |store| {
    let (live, old) = (hash_token("live"), hash_token("old"));
    store
        .insert_api_token(&token_row("1", &live, "read", None))
        .await
        .unwrap();
    store
        .insert_api_token(&token_row("2", &old, "admin", Some(T0 + 1)))
        .await
        .unwrap();
    let found = store.find_api_token(&live, T0 + 10).await.unwrap().unwrap();
    assert_eq!(found.scope, "read");
    assert_eq!(found.owner, "alice");
    assert!(found.requires_approval, "the flag survives the round trip");
    assert!(store.find_api_token(&old, T0 + 10).await.unwrap().is_none());
    assert_eq!(store.count_api_tokens().await.unwrap(), 2);
});

contract!(group_commit_applies_each_batch_exactly_once, |store| {
    use infrastructor_controller::store::BatchToIngest;
    store.insert_device(&device("d1", "one")).await.unwrap();
    store.insert_device(&device("d2", "two")).await.unwrap();
    let batch = |device: &str, seq: u64, value: f64| BatchToIngest {
        device_id: device.into(),
        seq,
        after_seq: 0,
        samples: samples("test.value", "{}", &[(T0 + seq as i64, value)]),
        dropped: (0, 0),
    };
    // Out of order on input, a replay inside the group, two devices.
    let group = vec![
        batch("d2", 1, 21.0),
        batch("d1", 2, 12.0),
        batch("d1", 1, 11.0),
        batch("d1", 1, 11.0),
    ];
    let outcomes = store.ingest_batches(&group, T0).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            IngestOutcome::Stored,
            IngestOutcome::Stored,
            IngestOutcome::Stored,
            IngestOutcome::Duplicate
        ]
    );
    assert_eq!(
        store.count_samples("d1", "test.value").await.unwrap(),
        vec![(11.0, 1), (12.0, 1)]
    );
    assert_eq!(
        store.count_samples("d2", "test.value").await.unwrap(),
        vec![(21.0, 1)]
    );
    let replay = store.ingest_batches(&group, T0).await.unwrap();
    assert!(replay.iter().all(|o| *o == IngestOutcome::Duplicate));
    assert_eq!(
        store.run_rollups(0, 100).await.unwrap(),
        2,
        "one pending range per device per group"
    );
});

contract!(
    a_batch_whose_predecessor_is_missing_is_refused_not_acked,
    |store| {
        use infrastructor_controller::store::BatchToIngest;
        store.insert_device(&device("d1", "one")).await.unwrap();
        let batch = |seq: u64, after_seq: u64| BatchToIngest {
            device_id: "d1".into(),
            seq,
            after_seq,
            samples: samples("test.value", "{}", &[(T0 + seq as i64, seq as f64)]),
            dropped: (0, 0),
        };
        // Batch 2 follows batch 1 on the stream, but batch 1 never committed (its group failed).
        let outcomes = store.ingest_batches(&[batch(2, 1)], T0).await.unwrap();
        assert_eq!(outcomes, vec![IngestOutcome::OutOfOrder]);
        assert!(store
            .count_samples("d1", "test.value")
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            store
                .device_by_id("d1")
                .await
                .unwrap()
                .unwrap()
                .high_water_mark,
            0
        );
        // Resent in order, both commit; a gap the agent itself made (spool drop) is fine.
        let outcomes = store
            .ingest_batches(&[batch(1, 0), batch(2, 1), batch(5, 2)], T0)
            .await
            .unwrap();
        assert_eq!(outcomes, vec![IngestOutcome::Stored; 3]);
        // A replay of an old batch on a new stream is a duplicate, not out of order.
        assert_eq!(
            store.ingest_batches(&[batch(2, 5)], T0).await.unwrap(),
            vec![IngestOutcome::Duplicate]
        );
    }
);

contract!(check_reports_keep_history_and_latest_per_check, |store| {
    use infrastructor_controller::domain::CheckStatus;
    use infrastructor_controller::store::CheckRow;
    store.insert_device(&device("d1", "one")).await.unwrap();
    let row = |name: &str, status: &str, at: i64| CheckRow {
        check_name: name.into(),
        status: CheckStatus::try_from(status.to_string()).unwrap(),
        message: format!("{name} {status}"),
        evidence: "{}".into(),
        checked_at_ms: at,
    };
    store
        .record_checks(
            "d1",
            r#"["docker"]"#,
            &[
                row("docker.containers", "ok", T0),
                row("zfs.pool:tank", "ok", T0),
            ],
            T0,
        )
        .await
        .unwrap();
    store
        .record_checks(
            "d1",
            r#"["docker","zfs"]"#,
            &[row("docker.containers", "critical", T0 + 60_000)],
            T0 + 60_000,
        )
        .await
        .unwrap();
    let latest = store.latest_checks("d1").await.unwrap();
    assert_eq!(
        latest
            .iter()
            .map(|r| (r.check_name.as_str(), r.status.as_str()))
            .collect::<Vec<_>>(),
        [("docker.containers", "critical"), ("zfs.pool:tank", "ok")]
    );
    assert_eq!(store.check_history("d1", None, 10).await.unwrap().len(), 3);
    let docker = store
        .check_history("d1", Some("docker.containers"), 10)
        .await
        .unwrap();
    assert_eq!(
        docker.iter().map(|r| r.status.as_str()).collect::<Vec<_>>(),
        ["critical", "ok"],
        "newest first"
    );
    assert_eq!(
        store
            .check_history("d1", Some("docker.containers"), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store.capabilities("d1").await.unwrap(),
        (r#"["docker","zfs"]"#.to_string(), Some(T0 + 60_000))
    );
    // Only the latest round counts for alerts: the pool it no longer reports is left out.
    let current = store.current_checks().await.unwrap();
    assert_eq!(
        current
            .iter()
            .map(|(d, r)| (d.as_str(), r.check_name.as_str()))
            .collect::<Vec<_>>(),
        [("d1", "docker.containers")]
    );
    assert_eq!(store.expire_checks(T0 + 1).await.unwrap(), 2);
    assert_eq!(store.check_history("d1", None, 10).await.unwrap().len(), 1);
    assert_eq!(store.latest_checks("d1").await.unwrap().len(), 1);
});

contract!(alerts_notifications_silences_and_leases, |store| {
    use infrastructor_controller::store::{
        AlertRow, Delivery, MaintenanceRow, NewNotification, SilenceRow,
    };
    store.insert_device(&device("d1", "nas")).await.unwrap();
    // One controller holds a lease until it lapses; then another may take it.
    assert!(store
        .hold_lease("alerts", "a", T0 + 30_000, T0)
        .await
        .unwrap());
    assert!(!store
        .hold_lease("alerts", "b", T0 + 40_000, T0 + 10_000)
        .await
        .unwrap());
    assert!(store
        .hold_lease("alerts", "a", T0 + 60_000, T0 + 20_000)
        .await
        .unwrap());
    assert!(store
        .hold_lease("alerts", "b", T0 + 90_000, T0 + 61_000)
        .await
        .unwrap());
    assert!(!store
        .hold_lease("alerts", "a", T0 + 99_000, T0 + 62_000)
        .await
        .unwrap());

    // An evaluation's alerts and notifications land together.
    let alert = AlertRow {
        alert_key: "degraded_pools/d1/zfs.pool:tank".into(),
        rule: "degraded_pools".into(),
        device_id: "d1".into(),
        subject: "zfs.pool:tank".into(),
        severity: "critical".into(),
        summary: "tank".into(),
        labels: "{}".into(),
        record: "{}".into(),
        announced: "firing".into(),
        suppressed: None,
        updated_at_ms: T0,
    };
    let queued = |channel: &str, n: u32| NewNotification {
        channel: channel.into(),
        device_id: "d1".into(),
        body: format!("{{\"n\":{n}}}"),
    };
    store
        .save_evaluation(
            std::slice::from_ref(&alert),
            &[],
            &[queued("hook", 1), queued("hook", 2), queued("mail", 3)],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(store.alerts().await.unwrap(), std::slice::from_ref(&alert));
    let due = store.due_notifications(T0, 10).await.unwrap();
    assert_eq!(due.len(), 3);
    // A channel is a queue: while its first waits for a retry, the next is not due.
    let first = due[0].id;
    let retry = Delivery::Retry {
        at_ms: T0 + 5_000,
        error: "503",
    };
    store.record_delivery(first, 1, retry, T0).await.unwrap();
    let due = store.due_notifications(T0 + 1_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|n| n.channel.as_str()).collect::<Vec<_>>(),
        ["mail"]
    );
    store
        .record_delivery(first, 2, Delivery::Dead { error: "503" }, T0 + 5_000)
        .await
        .unwrap();
    let dead = store.notifications(Some("dead"), 10).await.unwrap();
    assert_eq!((dead.len(), dead[0].attempts), (1, 2));
    assert!(store.requeue_notification(first, T0 + 6_000).await.unwrap());
    let requeued = store.notification(first).await.unwrap().unwrap();
    assert_eq!((requeued.state.as_str(), requeued.attempts), ("pending", 0));
    assert!(store.notification(first + 1000).await.unwrap().is_none());
    assert!(!store.requeue_notification(first, T0 + 6_000).await.unwrap());
    store
        .record_delivery(first, 1, Delivery::Sent, T0 + 7_000)
        .await
        .unwrap();
    assert_eq!(
        store.notifications(Some("sent"), 10).await.unwrap().len(),
        1
    );
    assert_eq!(store.expire_notifications(T0 + 1).await.unwrap(), 1);
    store
        .save_evaluation(&[], std::slice::from_ref(&alert.alert_key), &[], T0 + 8_000)
        .await
        .unwrap();
    assert!(store.alerts().await.unwrap().is_empty());

    // A device's maintenance and its silence, together; the silence ends on its own.
    let silence = SilenceRow {
        id: "s1".into(),
        scope: "{}".into(),
        schedule: "{}".into(),
        reason: "disk swap".into(),
        created_by: "alice".into(),
        created_at_ms: T0,
        expires_at_ms: T0 + 3_600_000,
        ended_at_ms: None,
        ended_by: None,
    };
    let entry = MaintenanceRow {
        device_id: "d1".into(),
        reason: "disk swap".into(),
        started_by: "alice".into(),
        started_at_ms: T0,
        until_ms: T0 + 3_600_000,
        stopped: "[]".into(),
        silence_id: "s1".into(),
    };
    store.start_maintenance(&entry, &silence).await.unwrap();
    store.record_maintenance_stopped("d1", "[1]").await.unwrap();
    assert_eq!(
        store.maintenance("d1").await.unwrap().unwrap().stopped,
        "[1]"
    );
    assert_eq!(store.silences(T0).await.unwrap().len(), 1);
    assert!(store.silences(T0 + 3_600_000).await.unwrap().is_empty());
    assert!(store.end_silence("s1", "bob", T0 + 10).await.unwrap());
    assert!(!store.end_silence("s1", "bob", T0 + 11).await.unwrap());
    assert_eq!(
        store
            .silence("s1")
            .await
            .unwrap()
            .unwrap()
            .ended_by
            .as_deref(),
        Some("bob")
    );
    assert!(store.end_maintenance("d1").await.unwrap());
    assert!(store.all_maintenance().await.unwrap().is_empty());
});

contract!(change_transactions_and_their_targets, |store| {
    use infrastructor_controller::domain::{ChangeState, TargetState};
    use infrastructor_controller::store::{ChangeRow, TargetUpdate};
    store.insert_device(&device("d1", "web-1")).await.unwrap();
    store.insert_device(&device("d2", "web-2")).await.unwrap();
    let change = |id: &str, at: i64| ChangeRow {
        id: id.into(),
        kind: "deploy".into(),
        state: ChangeState::Preparing,
        requested_by: "alice".into(),
        request_id: "req-1".into(),
        change_set: "{}".into(),
        options: "{}".into(),
        error: None,
        created_at_ms: at,
        updated_at_ms: at,
    };
    let both = ["d1".to_string(), "d2".to_string()];
    store.insert_change(&change("c1", T0), &both).await.unwrap();
    store
        .insert_change(&change("c2", T0 + 1), &both[..1])
        .await
        .unwrap();
    assert!(
        store.insert_change(&change("c1", T0), &both).await.is_err(),
        "IDs are unique"
    );

    let prepared = TargetUpdate {
        state: TargetState::Prepared,
        prepare_report: Some("{\"files\":[]}"),
        ..Default::default()
    };
    store
        .update_change_target("c1", "d1", prepared, T0 + 5)
        .await
        .unwrap();
    // A later update without a report keeps the stored one.
    let aborted = TargetUpdate {
        state: TargetState::Aborted,
        error: Some("validator failed"),
        ..Default::default()
    };
    store
        .update_change_target("c1", "d1", aborted, T0 + 6)
        .await
        .unwrap();
    assert!(store
        .set_change_state("c1", ChangeState::Aborted, Some("d2: refused"), T0 + 7)
        .await
        .unwrap());
    // States move only forward: an aborted change is final, and a refused move changes
    // nothing (its error and time stay).
    for later in [
        ChangeState::Aborted,
        ChangeState::Committed,
        ChangeState::RolledBack,
    ] {
        assert!(!store
            .set_change_state("c1", later, None, T0 + 8)
            .await
            .unwrap());
    }
    // A move without an error keeps the stored one.
    assert!(store
        .set_change_state("c2", ChangeState::Committing, Some("slow"), T0 + 7)
        .await
        .unwrap());
    assert!(
        !store
            .set_change_state("c2", ChangeState::Committed, None, T0 + 8)
            .await
            .unwrap(),
        "committed only through the decision record"
    );
    for next in [ChangeState::Confirming, ChangeState::Committed] {
        assert!(store
            .set_change_state("c2", next, None, T0 + 9)
            .await
            .unwrap());
    }
    let (c2, _) = store.change("c2").await.unwrap().unwrap();
    assert_eq!(
        (c2.state, c2.error.as_deref()),
        (ChangeState::Committed, Some("slow"))
    );

    let (row, targets) = store.change("c1").await.unwrap().unwrap();
    assert_eq!(
        (row.state.as_str(), row.error.as_deref()),
        ("aborted", Some("d2: refused"))
    );
    assert_eq!(row.updated_at_ms, T0 + 7);
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].device_id, "d1");
    assert_eq!(targets[0].state, TargetState::Aborted);
    assert_eq!(targets[0].prepare_report.as_deref(), Some("{\"files\":[]}"));
    assert_eq!(targets[0].error.as_deref(), Some("validator failed"));
    assert_eq!(targets[1].state, TargetState::Pending);
    assert!(store.change("nope").await.unwrap().is_none());

    let all: Vec<String> = store
        .changes(None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(all, ["c2", "c1"], "newest first");
    let of_d2: Vec<String> = store
        .changes(Some("d2"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(of_d2, ["c1"]);
    assert_eq!(store.changes(None, 1).await.unwrap().len(), 1);
});

contract!(
    applications_keep_every_version_and_refuse_stale_declarations,
    |store| {
        let v1 = store
            .declare_application("shop", Some("[1]"), Some(0), "alice", T0)
            .await
            .unwrap();
        assert_eq!(v1, 1);
        let v2 = store
            .declare_application("shop", Some("[2]"), None, "bob", T0 + 1)
            .await
            .unwrap();
        assert_eq!(v2, 2);
        // Declared over a version the caller had not seen: refused, nothing stored.
        let stale = store
            .declare_application("shop", Some("[3]"), Some(1), "carol", T0 + 2)
            .await
            .unwrap_err();
        assert_eq!(
            stale.kind(),
            infrastructor_controller::error::ErrorKind::Conflict
        );
        store
            .declare_application("blog", Some("[9]"), None, "alice", T0)
            .await
            .unwrap();
        let removed = store
            .declare_application("blog", None, Some(1), "alice", T0 + 3)
            .await
            .unwrap();
        assert_eq!(removed, 2);
        let live = store.applications().await.unwrap();
        let names: Vec<(&str, i64)> = live.iter().map(|a| (a.name.as_str(), a.version)).collect();
        assert_eq!(names, [("shop", 2)], "the removed one is not listed");
        let first = store.application("shop", Some(1)).await.unwrap().unwrap();
        assert_eq!(
            (first.spec.as_deref(), first.declared_by.as_str()),
            (Some("[1]"), "alice")
        );
        let latest = store.application("blog", None).await.unwrap().unwrap();
        assert_eq!(
            (latest.version, latest.spec),
            (2, None),
            "kept as a removal"
        );
        assert!(store.application("nothing", None).await.unwrap().is_none());
    }
);

contract!(backup_runs_verified_snapshots_and_dr_steps, |store| {
    use infrastructor_controller::store::{BackupRunRow, Declared, DrStepRow};
    let run =
        |id: &str, kind: &str, passed: bool, snapshot_at: Option<i64>, at: i64| BackupRunRow {
            id: id.into(),
            target: "etc".into(),
            kind: kind.into(),
            device_id: "d1".into(),
            job_id: None,
            started_at_ms: at - 10,
            finished_at_ms: at,
            passed,
            snapshot: snapshot_at.map(|t| format!("snap{t}")),
            snapshot_at_ms: snapshot_at,
            restore_ms: Some(42),
            details: "{}".into(),
            error: None,
        };
    for row in [
        run("b1", "backup", true, Some(T0), T0),
        run("d1", "drill", true, Some(T0), T0 + 100),
        run("b2", "backup", true, Some(T0 + 1000), T0 + 1000),
        run("d2", "drill", false, Some(T0 + 1000), T0 + 1100),
        run("c1", "check", true, None, T0 + 1200),
    ] {
        store.record_backup_run(&row).await.unwrap();
    }
    let newest = store.newest_verified("etc").await.unwrap().unwrap();
    assert_eq!(newest.id, "d1", "a failed drill verifies nothing");
    assert!(newest.passed);
    let drills = store.backup_runs("etc", Some("drill"), 10).await.unwrap();
    assert_eq!(
        drills.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["d2", "d1"]
    );
    let all = store.backup_runs("etc", None, 2).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["c1", "d2"]
    );
    assert_eq!(store.count_backup_runs("etc", "check").await.unwrap(), 1);
    assert!(store.newest_verified("other").await.unwrap().is_none());

    let v = store
        .declare(
            Declared::DrPlan,
            "restore",
            Some("name: restore"),
            Some(0),
            "alice",
            T0,
        )
        .await
        .unwrap();
    assert_eq!(v, 1);
    store
        .declare(
            Declared::BackupTarget,
            "restore",
            Some("{}"),
            None,
            "alice",
            T0,
        )
        .await
        .unwrap();
    let revisions = store
        .declared_versions(Declared::DrPlan, "restore")
        .await
        .unwrap();
    assert_eq!(revisions.len(), 1, "kinds are kept apart");

    let step = |state: &str, output: &str| DrStepRow {
        run_id: "job1".into(),
        step_id: "restore".into(),
        plan: "restore".into(),
        revision: 1,
        position: 0,
        operation: "manage_backups".into(),
        state: state.into(),
        output: output.into(),
        error: None,
        job_id: None,
        started_at_ms: T0,
        finished_at_ms: T0 + 5,
    };
    store.record_dr_step(&step("failed", "null")).await.unwrap();
    // Taken again after a crash: the record is replaced, not doubled.
    store
        .record_dr_step(&step("succeeded", "{\"ok\":true}"))
        .await
        .unwrap();
    let steps = store.dr_steps("job1").await.unwrap();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        (steps[0].state.as_str(), steps[0].output.as_str()),
        ("succeeded", "{\"ok\":true}")
    );
});
