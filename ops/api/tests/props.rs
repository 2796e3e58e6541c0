//! Property tests on the wire types: parsing hostile input never panics,
//! valid values survive a JSON round trip, validation is total.

use diemcau_ops_api::auth::{SignedHeader, canonical_message};
use diemcau_ops_api::*;
use proptest::prelude::*;

fn arb_state() -> impl Strategy<Value = DeviceState> {
    prop_oneof![
        Just(DeviceState::Idle),
        Just(DeviceState::Joining),
        Just(DeviceState::InCall),
        Just(DeviceState::Leaving),
        Just(DeviceState::Standby),
        Just(DeviceState::Error),
    ]
}

fn arb_heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        arb_state(),
        0u64..10_000_000,
        proptest::option::of(-40.0f32..120.0),
        proptest::option::of(0u8..=100),
        proptest::option::of((0u32..50_000, 0.0f32..60.0, 0u64..1_000_000, 0u32..5000)),
    )
        .prop_map(|(state, uptime_s, temperature_c, q, call)| Heartbeat {
            state,
            versions: [("daemon".to_string(), "0.1.0".to_string())]
                .into_iter()
                .collect(),
            uptime_s,
            temperature_c,
            link: LinkStats {
                kind: Some("wifi".into()),
                signal_dbm: Some(-60),
                rtt_ms: Some(10),
                quality_pct: q,
            },
            call: call.map(|(bitrate_kbps, fps, packets_lost, rtt_ms)| CallStats {
                meeting_id: Some("mtg_x".into()),
                bitrate_kbps,
                fps,
                packets_lost,
                rtt_ms,
            }),
            self_test: None,
        })
}

proptest! {
    #[test]
    fn heartbeat_roundtrip_and_valid(hb in arb_heartbeat()) {
        prop_assert!(hb.validate().is_ok());
        let s = serde_json::to_string(&hb).unwrap();
        let back: Heartbeat = serde_json::from_str(&s).unwrap();
        prop_assert_eq!(back, hb);
    }

    #[test]
    fn meeting_roundtrip(id in "[a-z0-9_]{1,20}", title in "\\PC{1,50}", s in 0i64..4_000_000_000, d in 1i64..86_400,
                         room in 1u64..(1u64 << 53), pin in proptest::option::of("[0-9]{6}"), urgent in any::<bool>()) {
        let m = Meeting { id, title, starts_at: s, ends_at: s + d,
            janus: JanusRoom { ws_url: "wss://x/janus".into(), room_id: room, pin }, communes: vec!["xa-a".into()], urgent };
        let back: Meeting = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        prop_assert_eq!(&back, &m);
        let ev = PushEvent::Convene(m);
        let back: PushEvent = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        prop_assert_eq!(back, ev);
    }

    #[test]
    fn hostile_json_never_panics(s in "\\PC{0,200}") {
        let _ = serde_json::from_str::<EnrolRequest>(&s).map(|r| r.validate());
        let _ = serde_json::from_str::<Heartbeat>(&s).map(|r| r.validate());
        let _ = serde_json::from_str::<EventBatch>(&s).map(|r| r.validate());
        let _ = serde_json::from_str::<CreateMeeting>(&s).map(|r| r.validate());
        let _ = serde_json::from_str::<ConveneRequest>(&s).map(|r| r.validate());
    }

    #[test]
    fn enrol_validation_is_total(token in "\\PC{0,150}", serial in "\\PC{0,80}", board in "\\PC{0,80}",
                                 key in "\\PC{0,60}", commune in proptest::option::of("\\PC{0,70}"), v in any::<u32>()) {
        let r = EnrolRequest { api_version: v, claim_token: token, serial, board, versions: Default::default(),
            public_key: key, commune };
        if let Err(e) = r.validate() {
            prop_assert!(!e.field.is_empty());
            prop_assert!(!e.expected.is_empty());
        }
    }

    #[test]
    fn auth_header_parse_never_panics(s in "\\PC{0,300}") {
        let _ = SignedHeader::parse(&s);
        let _ = SignedHeader::parse(&format!("Diemcau-Ed25519 {s}"));
    }

    #[test]
    fn signed_header_roundtrip(dev in "[A-Za-z0-9_-]{1,64}", ts in any::<i64>(), nonce in "[A-Za-z0-9_-]{1,64}", sig in proptest::array::uniform32(any::<u8>())) {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(&sig);
        let h = SignedHeader { device_id: dev, ts_ms: ts, nonce, signature };
        prop_assert_eq!(SignedHeader::parse(&h.to_header_value()).unwrap(), h);
    }

    #[test]
    fn canonical_message_differs_on_any_field(a in any::<i64>(), b in any::<i64>()) {
        prop_assume!(a != b);
        prop_assert_ne!(canonical_message("GET", "/p", a, "n", b""), canonical_message("GET", "/p", b, "n", b""));
    }
}

#[test]
fn events_at_limit() {
    let ev = DeviceEvent {
        id: "e".into(),
        at: 1,
        kind: DeviceEventKind::Joined,
        meeting_id: None,
        message: None,
        offline: false,
    };
    assert!(
        EventBatch {
            events: vec![ev.clone(); 500]
        }
        .validate()
        .is_ok()
    );
    let e = EventBatch {
        events: vec![ev; 501],
    }
    .validate()
    .unwrap_err();
    assert_eq!(e.field, "events");
    assert_eq!(
        DeviceEventKind::parse("join_failed"),
        Some(DeviceEventKind::JoinFailed)
    );
    assert_eq!(DeviceEventKind::parse("nope"), None);
}
