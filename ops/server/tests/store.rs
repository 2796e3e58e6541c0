//! The store on every backend: SQLite always, PostgreSQL when
//! `DIEMCAU_TEST_PG_URL` is set.

mod common;

use diemcau_agent::api::{DeviceEvent, DeviceEventKind};
use diemcau_ops::Store;
use diemcau_ops::store::{DeviceRow, MeetingRow, StoreError, TokenRejection};

fn device(id: &str, serial: &str, commune: Option<&str>) -> DeviceRow {
    DeviceRow {
        id: id.into(),
        serial: serial.into(),
        board: "sim".into(),
        public_key: format!("pk-{id}"),
        token_hash: "h".into(),
        commune_id: commune.map(str::to_owned),
        versions: "{}".into(),
        enrolled_at: 100,
        revoked_at: None,
        last_seen: None,
        state: None,
        heartbeat: None,
    }
}

fn event(id: &str, at: i64, offline: bool) -> DeviceEvent {
    DeviceEvent {
        id: id.into(),
        at,
        kind: DeviceEventKind::Joined,
        meeting_id: Some("mtg_1".into()),
        message: Some("Vào họp lúc mất mạng".into()),
        offline,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_behaves_the_same_on_every_backend() {
    for db in common::backends() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = common::db_url(&db, dir.path()).await;
        let s = Store::connect(&url).await.expect("connect");
        // Connecting again runs the migrations idempotently.
        let s2 = Store::connect(&url).await.expect("reconnect");
        s2.close().await;

        s.add_commune("xa-a", "Xã Tân Lập", 1)
            .await
            .expect("commune");
        assert!(matches!(
            s.add_commune("xa-a", "x", 1).await,
            Err(StoreError::Conflict { .. })
        ));
        s.add_commune("xa-b", "Xã Hòa Bình", 1)
            .await
            .expect("commune");
        assert_eq!(
            s.commune_name("xa-a").await.expect("name").as_deref(),
            Some("Xã Tân Lập")
        );

        // Tokens: atomic use count and expiry.
        s.create_token("t1", 2, 1000, Some("xa-a"), 1)
            .await
            .expect("token");
        assert_eq!(
            s.consume_token("t1", 10).await.expect("q"),
            Ok(Some("xa-a".into()))
        );
        assert_eq!(
            s.consume_token("t1", 10).await.expect("q"),
            Ok(Some("xa-a".into()))
        );
        assert_eq!(
            s.consume_token("t1", 10).await.expect("q"),
            Err(TokenRejection::UsedUp)
        );
        s.create_token("t2", 2, 1000, None, 1).await.expect("token");
        assert_eq!(
            s.consume_token("t2", 1000).await.expect("q"),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            s.consume_token("nope", 10).await.expect("q"),
            Err(TokenRejection::Unknown)
        );

        // Devices.
        s.insert_device(&device("d1", "S1", Some("xa-a")))
            .await
            .expect("d1");
        s.insert_device(&device("d2", "S2", Some("xa-b")))
            .await
            .expect("d2");
        let mut dup = device("d3", "S3", None);
        dup.public_key = "pk-d1".into();
        assert!(matches!(
            s.insert_device(&dup).await,
            Err(StoreError::Conflict { .. })
        ));
        s.record_heartbeat("d1", 500, "in_call", r#"{"state":"in_call"}"#)
            .await
            .expect("hb");
        let d1 = s.device("d1").await.expect("q").expect("d1");
        assert_eq!(
            (d1.last_seen, d1.state.as_deref()),
            (Some(500), Some("in_call"))
        );
        assert_eq!(
            s.device_by_key("pk-d2")
                .await
                .expect("q")
                .map(|d| d.id)
                .as_deref(),
            Some("d2")
        );
        assert_eq!(
            s.device_ids_in_communes(&["xa-a".into()]).await.expect("q"),
            vec!["d1".to_string()]
        );
        assert!(s.revoke_device("d2", 600).await.expect("revoke"));
        assert!(!s.revoke_device("zz", 600).await.expect("revoke"));
        assert_eq!(
            s.device("d2").await.expect("q").expect("d2").revoked_at,
            Some(600)
        );
        assert!(
            s.device_ids_in_communes(&["xa-b".into()])
                .await
                .expect("q")
                .is_empty()
        );
        s.insert_device(&device("d4", "S1", Some("xa-a")))
            .await
            .expect("d4");
        assert_eq!(
            s.revoke_serial_except("S1", "d4", 700).await.expect("q"),
            vec!["d1".to_string()]
        );

        // Meetings by commune, ended ones dropped.
        let m = |id: &str, s0: i64, e: i64, communes: &[&str]| MeetingRow {
            id: id.into(),
            title: format!("Họp {id}"),
            starts_at: s0,
            ends_at: e,
            room_id: (1u64 << 52) as i64 + 7,
            pin: Some("123456".into()),
            secret: "sec".into(),
            ws_url: "ws://x".into(),
            urgent: id == "m3",
            created_at: 1,
            communes: communes.iter().map(|c| c.to_string()).collect(),
        };
        s.insert_meeting(&m("m1", 1000, 2000, &["xa-a", "xa-b"]))
            .await
            .expect("m1");
        s.insert_meeting(&m("m2", 100, 200, &["xa-a"]))
            .await
            .expect("m2");
        s.insert_meeting(&m("m3", 1500, 1600, &["xa-b"]))
            .await
            .expect("m3");
        let a = s.meetings_for_commune("xa-a", 500).await.expect("q");
        assert_eq!(
            a.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            vec!["m1"]
        );
        assert_eq!(a[0].communes, vec!["xa-a".to_string(), "xa-b".to_string()]);
        assert_eq!(a[0].room_id, (1u64 << 52) as i64 + 7);
        let b = s.meetings_for_commune("xa-b", 500).await.expect("q");
        assert_eq!(b.len(), 2);
        assert!(b[1].urgent);
        assert_eq!(s.upcoming_meetings(150).await.expect("q").len(), 3);

        // Events: duplicates (a re-sent batch) stored once, newest first.
        let batch = vec![event("e1", 10, true), event("e2", 20, false)];
        assert_eq!(s.insert_events("d4", &batch, 30).await.expect("ev"), 2);
        assert_eq!(s.insert_events("d4", &batch, 31).await.expect("ev"), 0);
        let evs = s.recent_events("d4", 10).await.expect("q");
        assert_eq!(
            evs.iter().map(|e| e.event.id.as_str()).collect::<Vec<_>>(),
            vec!["e2", "e1"]
        );
        assert!(evs[1].event.offline);
        assert_eq!(
            evs[1].event.message.as_deref(),
            Some("Vào họp lúc mất mạng")
        );

        // Admins.
        s.create_admin("an", "hash", 1).await.expect("admin");
        assert!(matches!(
            s.create_admin("an", "h", 1).await,
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            s.admin_hash("an").await.expect("q").as_deref(),
            Some("hash")
        );
        assert_eq!(s.admin_hash("bo").await.expect("q"), None);
        s.close().await;
        eprintln!("store test passed on {db:?}");
    }
}

#[tokio::test]
async fn bad_database_urls_are_explained() {
    let e = Store::connect("mysql://x").await.expect_err("scheme");
    assert!(e.to_string().contains("sqlite://"));
    let e = Store::connect("postgres://u:secret@127.0.0.1:1/db")
        .await
        .expect_err("unreachable");
    assert!(!e.to_string().contains("secret"), "{e}");
}
