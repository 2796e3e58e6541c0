//! End-to-end flows with an ops server on port 0 and simulated devices
//! (real agents with their own state folders).

mod common;

use std::time::{Duration, Instant};

use common::{Device, Ops, eventually, now};
use diemcau_agent::api::{
    CallStats, DeviceEventKind, DeviceState, DeviceStatus, Heartbeat, LinkStats,
};
use diemcau_agent::{AgentEvent, due_meeting};
use serde_json::{Value, json};

fn in_call(meeting: &str) -> Heartbeat {
    Heartbeat {
        state: DeviceState::InCall,
        versions: Default::default(),
        uptime_s: 42,
        temperature_c: Some(51.5),
        link: LinkStats {
            kind: Some("ethernet".into()),
            signal_dbm: None,
            rtt_ms: Some(12),
            quality_pct: Some(93),
        },
        call: Some(CallStats {
            meeting_id: Some(meeting.into()),
            bitrate_kbps: 1800,
            fps: 25.0,
            packets_lost: 3,
            rtt_ms: 40,
        }),
        self_test: None,
    }
}

/// What the room daemon does with the agent's schedule: waits for the
/// meeting to be due (time as input) and joins by itself.
async fn room_joins_when_due(dev: &mut Device, meeting_id: &str, deadline_s: u64) -> i64 {
    let t0 = Instant::now();
    loop {
        let schedule = dev.agent.schedule();
        let now = dev.agent.server_now();
        if let Some(m) = due_meeting(&schedule, now)
            && m.id == meeting_id
        {
            dev.agent
                .report_event(DeviceEventKind::Joined, Some(meeting_id), None);
            dev.agent.report_heartbeat(in_call(meeting_id));
            return now;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(deadline_s),
            "room never joined {meeting_id}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fleet_status(ops: &Ops, device: &str) -> Option<DeviceStatus> {
    let v: diemcau_agent::api::FleetView =
        ops.get("/api/v1/admin/fleet").await.json().await.ok()?;
    v.communes
        .iter()
        .flat_map(|c| c.devices.iter())
        .chain(v.unassigned.iter())
        .find(|d| d.device_id == device)
        .map(|d| d.status)
}

async fn device_events(ops: &Ops, device: &str) -> Vec<Value> {
    let v: Value = ops
        .get(&format!("/api/v1/admin/devices/{device}"))
        .await
        .json()
        .await
        .expect("detail");
    v["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrol_schedule_and_both_rooms_join_by_themselves() {
    let janus = common::janus::Janus::start().await;
    let url = janus.http_url.clone();
    let ops = Ops::start_with(common::Db::Sqlite, move |c| c.janus_url = Some(url)).await;
    let mut a =
        Device::start(ops.device_config("a", &ops.token(1, Some("xa-a")).await, None)).await;
    let mut b =
        Device::start(ops.device_config("b", &ops.token(1, None).await, Some("xa-b"))).await;
    let ida = a.wait_enrolled(&ops).await;
    let idb = b.wait_enrolled(&ops).await;
    assert_ne!(ida, idb);

    let start = now() + 3;
    let r = ops
        .post(
            "/api/v1/admin/meetings",
            json!({"title": "Hội nghị giao ban tháng 11", "starts_at": start, "ends_at": start + 600, "communes": ["xa-a", "xa-b"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let m: diemcau_agent::api::Meeting = r.json().await.expect("meeting");
    assert!(m.janus.pin.is_some());

    // The room exists in Janus with a PIN.
    let jc = diemcau_ops::janus::JanusClient::new(&janus.http_url).expect("janus client");
    assert!(jc.room_exists(m.janus.room_id).await.expect("exists"));
    let info = jc
        .room_info(m.janus.room_id)
        .await
        .expect("list")
        .expect("room listed");
    assert_eq!(info["pin_required"], true);
    assert_eq!(info["max_publishers"], 130);

    for dev in [&mut a, &mut b] {
        dev.wait_for(
            5,
            "schedule with the meeting",
            |e| matches!(e, AgentEvent::Schedule(s) if s.iter().any(|x| x.id == m.id)),
        )
        .await;
    }
    // Cached on disk (atomic write) before the start.
    let cache =
        std::fs::read_to_string(ops.dir.path().join("a/state/schedule.json")).expect("cache");
    assert!(cache.contains(&m.id));

    let (ja, jb) = tokio::join!(
        room_joins_when_due(&mut a, &m.id, 10),
        room_joins_when_due(&mut b, &m.id, 10)
    );
    assert!(ja >= start && jb >= start, "joined before the start");
    assert!(
        ja <= start + 2 && jb <= start + 2,
        "joined late: {ja} {jb} vs {start}"
    );

    for id in [&ida, &idb] {
        eventually(5, "device shows in call", || async {
            (fleet_status(&ops, id).await == Some(DeviceStatus::InCall)).then_some(())
        })
        .await;
        eventually(5, "joined event reported", || async {
            device_events(&ops, id)
                .await
                .iter()
                .any(|e| {
                    e["event"]["kind"] == "joined" && e["event"]["meeting_id"] == m.id.as_str()
                })
                .then_some(())
        })
        .await;
    }
    let detail: Value = ops
        .get(&format!("/api/v1/admin/devices/{ida}"))
        .await
        .json()
        .await
        .expect("detail");
    assert_eq!(detail["device"]["heartbeat"]["call"]["bitrate_kbps"], 1800);
    assert_eq!(detail["device"]["commune"], "xa-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn convene_now_reaches_online_rooms_of_chosen_communes_within_5s() {
    for db in common::backends() {
        let ops = Ops::start_with(db, |_| {}).await;
        let mut a1 =
            Device::start(ops.device_config("a1", &ops.token(2, Some("xa-a")).await, None)).await;
        let t = ops.token(2, Some("xa-a")).await;
        let mut a2 = Device::start(ops.device_config("a2", &t, None)).await;
        let mut b1 =
            Device::start(ops.device_config("b1", &ops.token(1, Some("xa-b")).await, None)).await;
        a1.wait_enrolled(&ops).await;
        a2.wait_enrolled(&ops).await;
        b1.wait_enrolled(&ops).await;

        let clicked = Instant::now();
        let r = ops
            .post(
                "/api/v1/admin/convene",
                json!({"title": "Họp khẩn: phòng chống bão", "communes": ["xa-a"]}),
            )
            .await;
        assert_eq!(r.status(), 201);
        let resp: Value = r.json().await.expect("convene json");
        assert_eq!(resp["notified_devices"], 2);
        let id = resp["meeting"]["id"].as_str().expect("id").to_owned();
        for dev in [&mut a1, &mut a2] {
            let ev = dev
                .wait_for(5, "convene", |e| matches!(e, AgentEvent::Convene(_)))
                .await;
            let AgentEvent::Convene(m) = ev else {
                unreachable!()
            };
            assert_eq!(m.id, id);
            assert!(m.urgent);
            // The room joins at once: the urgent meeting is due now.
            assert_eq!(
                due_meeting(std::slice::from_ref(&m), dev.agent.server_now()).map(|x| &x.id),
                Some(&id)
            );
        }
        assert!(
            clicked.elapsed() < Duration::from_secs(5),
            "convene took {:?}",
            clicked.elapsed()
        );
        // The other commune is not called.
        let got = tokio::time::timeout(Duration::from_millis(1500), async {
            loop {
                if let Some(AgentEvent::Convene(_)) = b1.events.recv().await {
                    return;
                }
            }
        })
        .await;
        assert!(got.is_err(), "xa-b must not be convened");
        for d in [a1, a2, b1] {
            d.agent.shutdown();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_down_at_scheduled_start_room_still_joins_and_reports_later() {
    let mut ops = Ops::start().await;
    let cfg = ops.device_config("off", &ops.token(1, Some("xa-a")).await, None);
    let mut dev = Device::start(cfg.clone()).await;
    let id = dev.wait_enrolled(&ops).await;
    let start = now() + 5;
    let r = ops
        .post(
            "/api/v1/admin/meetings",
            json!({"title": "Họp định kỳ", "starts_at": start, "ends_at": start + 900, "communes": ["xa-a"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let m: Value = r.json().await.expect("meeting");
    let mid = m["id"].as_str().expect("id").to_owned();
    dev.wait_for(
        5,
        "schedule",
        |e| matches!(e, AgentEvent::Schedule(s) if !s.is_empty()),
    )
    .await;

    // Ops goes down, and the board reboots while it is down.
    ops.stop().await;
    dev.agent.shutdown();
    drop(dev);
    let mut dev = Device::start(cfg).await;
    let ev = dev
        .wait_for(2, "cached schedule at start", |e| {
            matches!(e, AgentEvent::Schedule(_))
        })
        .await;
    assert!(matches!(&ev, AgentEvent::Schedule(s) if s.iter().any(|x| x.id == mid)));
    dev.wait_for(5, "ops unreachable", |e| {
        *e == AgentEvent::OpsReachable(false)
    })
    .await;

    let joined_at = room_joins_when_due(&mut dev, &mid, 15).await;
    assert!(joined_at >= start);
    assert!(dev.agent.pending_events() > 0);

    // Ops comes back: the queued events arrive, marked offline.
    ops.restart().await;
    dev.wait_for(10, "ops reachable", |e| {
        *e == AgentEvent::OpsReachable(true)
    })
    .await;
    let evs = eventually(10, "offline join reported", || async {
        let evs = device_events(&ops, &id).await;
        evs.iter()
            .any(|e| e["event"]["kind"] == "joined" && e["event"]["offline"] == true)
            .then_some(evs)
    })
    .await;
    assert!(
        evs.iter()
            .any(|e| e["event"]["kind"] == "ops_unreachable" || e["event"]["kind"] == "booted")
    );
    eventually(5, "queue drained", || async {
        (dev.agent.pending_events() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_stream_is_back_soon_after_ops_returns() {
    let mut ops = Ops::start().await;
    let mut dev =
        Device::start(ops.device_config("pb", &ops.token(1, Some("xa-a")).await, None)).await;
    let id = dev.wait_enrolled(&ops).await;
    ops.stop().await;
    dev.wait_for(5, "ops unreachable", |e| {
        *e == AgentEvent::OpsReachable(false)
    })
    .await;
    // Long enough for the push stream's backoff to grow to 8 s (its next
    // try would be about 6 s after the restart).
    tokio::time::sleep(Duration::from_secs(9)).await;
    ops.restart().await;
    dev.wait_for(5, "ops reachable", |e| *e == AgentEvent::OpsReachable(true))
        .await;
    eventually(3, "push stream reconnected", || async {
        ops.server
            .as_ref()
            .is_some_and(|s| s.state.push.is_connected(&id))
            .then_some(())
    })
    .await;
    let r = ops
        .post(
            "/api/v1/admin/convene",
            json!({"title": "Họp khẩn", "communes": ["xa-a"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let resp: Value = r.json().await.expect("convene json");
    assert_eq!(resp["notified_devices"], 1);
    dev.wait_for(3, "convene", |e| matches!(e, AgentEvent::Convene(_)))
        .await;
    dev.agent.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_is_refused_at_once() {
    let ops = Ops::start().await;
    let cfg = ops.device_config("rev", &ops.token(1, Some("xa-a")).await, None);
    let state_dir = cfg.state_dir.clone();
    let mut dev = Device::start(cfg.clone()).await;
    let id = dev.wait_enrolled(&ops).await;
    let r = ops
        .post(&format!("/api/v1/admin/devices/{id}/revoke"), json!({}))
        .await;
    assert_eq!(r.status(), 204);
    let t = Instant::now();
    dev.wait_for(3, "revoked", |e| *e == AgentEvent::Revoked)
        .await;
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(fleet_status(&ops, &id).await, Some(DeviceStatus::Revoked));
    let ident = std::fs::read_to_string(state_dir.join("identity.json")).expect("identity");
    assert!(ident.contains("\"revoked\": true"));
    // Restarted, it stays revoked and does not talk to ops.
    let mut again = Device::start(cfg).await;
    again
        .wait_for(2, "revoked at start", |e| *e == AgentEvent::Revoked)
        .await;
    let r = ops
        .post("/api/v1/admin/devices/dev_unknown/revoke", json!({}))
        .await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_heartbeats_show_offline() {
    let ops = Ops::start().await;
    let dev = {
        let mut d =
            Device::start(ops.device_config("hb", &ops.token(1, Some("xa-b")).await, None)).await;
        d.wait_enrolled(&ops).await;
        d
    };
    let id = dev.agent.device_id().expect("id");
    eventually(5, "online", || async {
        (fleet_status(&ops, &id).await == Some(DeviceStatus::Online)).then_some(())
    })
    .await;
    dev.agent.shutdown();
    eventually(10, "offline", || async {
        (fleet_status(&ops, &id).await == Some(DeviceStatus::Offline)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_token_is_reported_to_the_room() {
    let ops = Ops::start().await;
    let mut dev = Device::start(ops.device_config("bad", "dc1_not-a-real-token", None)).await;
    let ev = dev
        .wait_for(5, "enrolment rejected", |e| {
            matches!(e, AgentEvent::EnrolmentRejected(_))
        })
        .await;
    assert!(matches!(ev, AgentEvent::EnrolmentRejected(m) if m.contains("unknown")));
    assert!(dev.agent.device_id().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refuses_to_start_without_provisioning() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = diemcau_agent::AgentConfig::new(
        dir.path().join("s"),
        dir.path().join("missing.toml"),
        "SN1",
        "sim",
    );
    let e = diemcau_agent::Agent::start(cfg)
        .await
        .expect_err("must fail");
    assert!(format!("{e:?}").contains("missing.toml"));
}
