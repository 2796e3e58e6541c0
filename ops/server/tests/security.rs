//! Enrolment tokens, signed-request checks, admin authentication, rate
//! limiting, and malformed input (property tests).

mod common;

use base64::Engine as _;
use common::{ADMIN, Ops, PASSWORD};
use diemcau_agent::api::{API_VERSION, EnrolRequest, auth::SignedHeader};
use diemcau_agent::{Credentials, OpsClient};
use ed25519_dalek::SigningKey;
use proptest::prelude::*;
use serde_json::{Value, json};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn enrol_req(token: &str, k: &SigningKey, serial: &str) -> EnrolRequest {
    EnrolRequest {
        api_version: API_VERSION,
        claim_token: token.into(),
        serial: serial.into(),
        board: "sim".into(),
        versions: Default::default(),
        public_key: base64::engine::general_purpose::STANDARD.encode(k.verifying_key().to_bytes()),
        commune: None,
    }
}

async fn enrol_raw(ops: &Ops, req: &EnrolRequest) -> (u16, Value) {
    let r = ops
        .http
        .post(format!("{}/api/v1/enrol", ops.url))
        .json(req)
        .send()
        .await
        .expect("send");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Enrols with a fixed key and returns a signing client.
async fn signed_client(ops: &Ops, seed: u8) -> OpsClient {
    let token = ops.token(1, Some("xa-a")).await;
    let k = key(seed);
    let c = OpsClient::new(&ops.url, None).expect("client");
    let r = c
        .enrol(&enrol_req(&token, &k, &format!("SN{seed}")))
        .await
        .expect("enrol");
    c.with_credentials(Credentials {
        device_id: r.identity.device_id,
        key: k,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_expired_and_unknown_tokens_are_refused() {
    for db in common::backends() {
        let ops = Ops::start_with(db, |_| {}).await;
        let token = ops.token(1, Some("xa-a")).await;
        let (s, v) = enrol_raw(&ops, &enrol_req(&token, &key(1), "SN1")).await;
        assert_eq!(s, 200, "{v}");
        let id = v["identity"]["device_id"].as_str().expect("id").to_owned();
        assert_eq!(v["commune"]["id"], "xa-a");
        assert_eq!(v["commune"]["name"], "Xã Tân Lập");

        // The same device retrying (lost answer) gets the same identity.
        let (s, v) = enrol_raw(&ops, &enrol_req(&token, &key(1), "SN1")).await;
        assert_eq!(
            (s, v["identity"]["device_id"].as_str()),
            (200, Some(id.as_str()))
        );

        // Another device replaying the used token is refused.
        let (s, v) = enrol_raw(&ops, &enrol_req(&token, &key(2), "SN2")).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (403, Some("token_rejected")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap_or("").contains("used up"));

        // Expired.
        let store = &ops.server.as_ref().expect("server").state.store;
        let hash = diemcau_ops::util::sha256_hex("dc1_expired");
        store
            .create_token(&hash, 5, common::now() - 1, None, common::now() - 100)
            .await
            .expect("token");
        let (s, v) = enrol_raw(&ops, &enrol_req("dc1_expired", &key(3), "SN3")).await;
        assert_eq!((s, v["code"].as_str()), (403, Some("token_rejected")));
        assert!(v["message"].as_str().unwrap_or("").contains("expired"));

        // Unknown.
        let (s, _) = enrol_raw(&ops, &enrol_req("dc1_nope", &key(4), "SN4")).await;
        assert_eq!(s, 403);

        // Multi-use tokens count down exactly, even under concurrency.
        let t3 = ops.token(3, None).await;
        let futs: Vec<_> = (10..20u8)
            .map(|i| {
                let req = enrol_req(&t3, &key(i), &format!("SNc{i}"));
                let ops = &ops;
                async move { enrol_raw(ops, &req).await.0 }
            })
            .collect();
        let statuses = futures_util::future::join_all(futs).await;
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            3,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 403).count(),
            7,
            "{statuses:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reenrolling_a_serial_revokes_the_old_identity() {
    let ops = Ops::start().await;
    let (s, v) = enrol_raw(&ops, &enrol_req(&ops.token(1, None).await, &key(1), "SAME")).await;
    assert_eq!(s, 200);
    let old = v["identity"]["device_id"].as_str().expect("id").to_owned();
    let (s, _) = enrol_raw(&ops, &enrol_req(&ops.token(1, None).await, &key(2), "SAME")).await;
    assert_eq!(s, 200);
    let d: Value = ops
        .get(&format!("/api/v1/admin/devices/{old}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(d["device"]["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_requests_replay_tamper_skew_and_revocation() {
    let ops = Ops::start().await;
    let c = signed_client(&ops, 7).await;
    let hb = serde_json::to_vec(&json!({"state": "idle", "uptime_s": 5})).expect("json");
    let path = "/api/v1/device/heartbeat";

    // A captured request is accepted once.
    let req = c
        .signed_request(reqwest::Method::POST, path, hb.clone())
        .build()
        .expect("req");
    let replay = req.try_clone().expect("clone");
    let r = ops.http.execute(req).await.expect("send");
    assert_eq!(r.status(), 200);
    let r = ops.http.execute(replay).await.expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.expect("json")["code"], "replay");

    // A changed body breaks the signature.
    let mut req = c
        .signed_request(reqwest::Method::POST, path, hb.clone())
        .build()
        .expect("req");
    *req.body_mut() = Some(br#"{"state":"in_call","uptime_s":5}"#.to_vec().into());
    let r = ops.http.execute(req).await.expect("send");
    assert_eq!(r.status(), 401);

    // Signed for another path.
    let req = c
        .signed_request(reqwest::Method::POST, "/api/v1/device/events", hb.clone())
        .build()
        .expect("req");
    let url = format!("{}{path}", ops.url);
    let auth = req.headers().get("authorization").expect("auth").clone();
    let r = ops
        .http
        .post(url.clone())
        .header("authorization", auth)
        .body(hb.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    // A timestamp 10 minutes off is refused with the server time.
    let req = c
        .signed_request(reqwest::Method::POST, path, hb.clone())
        .build()
        .expect("req");
    let h =
        SignedHeader::parse(req.headers()["authorization"].to_str().expect("str")).expect("parse");
    let old = SignedHeader {
        ts_ms: h.ts_ms - 600_000,
        ..h
    };
    let r = ops
        .http
        .post(url.clone())
        .header("authorization", old.to_header_value())
        .body(hb.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["code"], "clock_skew");
    assert!(v["server_time"].as_i64().is_some());

    // No signature at all.
    let r = ops
        .http
        .post(url.clone())
        .body(hb.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    // Revocation applies to the very next request.
    assert!(c.schedule().await.is_ok());
    let fleet: Value = ops
        .get("/api/v1/admin/fleet")
        .await
        .json()
        .await
        .expect("fleet");
    let dev = fleet["communes"]
        .as_array()
        .expect("communes")
        .iter()
        .find_map(|c| c["devices"][0]["device_id"].as_str())
        .expect("dev")
        .to_owned();
    assert_eq!(
        ops.post(&format!("/api/v1/admin/devices/{dev}/revoke"), json!({}))
            .await
            .status(),
        204
    );
    let e = c
        .heartbeat(&serde_json::from_slice(&hb).expect("hb"))
        .await
        .expect_err("revoked");
    assert!(e.is_revoked(), "{e}");
    let r = c
        .signed_request(reqwest::Method::GET, "/api/v1/device/push", vec![])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_is_rate_limited() {
    let ops = Ops::start_with(common::Db::Sqlite, |c| c.enrol_per_minute = 3).await;
    let mut statuses = Vec::new();
    for i in 0..5u8 {
        statuses.push(
            enrol_raw(&ops, &enrol_req("dc1_nope", &key(i), "SN"))
                .await
                .0,
        );
    }
    assert_eq!(statuses, vec![403, 403, 403, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_login_and_there_is_no_default_password() {
    let ops = Ops::start().await;
    let url = &ops.url;
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = plain
        .get(format!("{url}/api/v1/admin/fleet"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    for (u, p) in [("admin", "admin"), ("admin", ""), (ADMIN, "wrong-password")] {
        let r = plain
            .get(format!("{url}/api/v1/admin/fleet"))
            .basic_auth(u, Some(p))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{u}:{p}");
    }
    // The page sends strangers to the login form.
    let r = plain.get(format!("{url}/")).send().await.expect("send");
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login");
    // Login form → session cookie → page and API.
    let r = plain
        .post(format!("{url}/login"))
        .form(&[("username", ADMIN), ("password", PASSWORD)])
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let session = cookie.split(';').next().expect("kv").to_owned();
    let r = plain
        .get(format!("{url}/"))
        .header("cookie", &session)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("html").contains("diemcau"));
    let r = plain
        .get(format!("{url}/api/v1/admin/fleet"))
        .header("cookie", &session)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    // Cookie-authenticated writes must be JSON (no cross-site form posts).
    let r = plain
        .post(format!("{url}/api/v1/admin/convene"))
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("title=x&communes=xa-a")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 415);
    let r = plain
        .post(format!("{url}/login"))
        .form(&[("username", ADMIN), ("password", "nope")])
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["location"], "/login?error=1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_inputs_are_validated() {
    let ops = Ops::start().await;
    let now = common::now();
    let cases = [
        (
            "/api/v1/admin/meetings",
            json!({"title": "", "starts_at": now, "ends_at": now + 60, "communes": ["xa-a"]}),
            "title",
        ),
        (
            "/api/v1/admin/meetings",
            json!({"title": "x", "starts_at": now + 60, "ends_at": now, "communes": ["xa-a"]}),
            "ends_at",
        ),
        (
            "/api/v1/admin/meetings",
            json!({"title": "x", "starts_at": now, "ends_at": now + 60, "communes": []}),
            "communes",
        ),
        (
            "/api/v1/admin/meetings",
            json!({"title": "x", "starts_at": now, "ends_at": now + 60, "communes": ["xa-zz"]}),
            "unknown commune",
        ),
        (
            "/api/v1/admin/meetings",
            json!({"title": "x", "starts_at": now - 7200, "ends_at": now - 3600, "communes": ["xa-a"]}),
            "future",
        ),
        (
            "/api/v1/admin/meetings",
            json!({"title": "x", "starts_at": "soon", "ends_at": now, "communes": ["xa-a"]}),
            "starts_at",
        ),
        (
            "/api/v1/admin/convene",
            json!({"title": "x", "communes": ["XA A"]}),
            "commune",
        ),
        (
            "/api/v1/admin/convene",
            json!({"title": "x", "communes": ["xa-a"], "duration_min": 0}),
            "duration_min",
        ),
        (
            "/api/v1/admin/communes",
            json!({"id": "Bad Id", "name": "x"}),
            "id",
        ),
        (
            "/api/v1/admin/communes",
            json!({"id": "xa-a", "name": "dup"}),
            "already exists",
        ),
        (
            "/api/v1/admin/tokens",
            json!({"uses": 0, "expires_in_s": 3600}),
            "uses",
        ),
        (
            "/api/v1/admin/tokens",
            json!({"uses": 1, "expires_in_s": 1}),
            "expires_in_s",
        ),
    ];
    for (path, body, needle) in cases {
        let r = ops.post(path, body.clone()).await;
        let status = r.status().as_u16();
        let v: Value = r.json().await.expect("error json");
        assert!((400..500).contains(&status), "{path} {body}: {status}");
        assert!(
            v["message"].as_str().unwrap_or("").contains(needle),
            "{path} {body}: {v}"
        );
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "\\PC{0,40}".prop_map(Value::String),
        Just(json!("idle")),
        Just(json!("xa-a")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("state".to_string()),
                    Just("uptime_s".to_string()),
                    Just("claim_token".to_string()),
                    Just("public_key".to_string()),
                    Just("serial".to_string()),
                    Just("board".to_string()),
                    Just("api_version".to_string()),
                    Just("title".to_string()),
                    Just("communes".to_string()),
                    Just("events".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Malformed bodies (random bytes and random JSON shaped like our types)
/// never crash the server and always get a 4xx with a JSON error.
#[test]
fn malformed_requests_get_4xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (ops, client) = rt.block_on(async {
        let ops = Ops::start_with(common::Db::Sqlite, |c| c.enrol_per_minute = 100_000).await;
        let client = signed_client(&ops, 9).await;
        (ops, client)
    });
    let cfg = ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(body in prop_oneof![
        arb_json().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        prop::collection::vec(any::<u8>(), 0..200),
    ], target in 0usize..5)| {
        let status = rt.block_on(async {
            let r = match target {
                0 => ops.http.post(format!("{}/api/v1/enrol", ops.url)).body(body.clone()).send().await,
                1 => client.signed_request(reqwest::Method::POST, "/api/v1/device/heartbeat", body.clone()).send().await,
                2 => client.signed_request(reqwest::Method::POST, "/api/v1/device/events", body.clone()).send().await,
                3 => ops.http.post(format!("{}/api/v1/admin/meetings", ops.url))
                        .basic_auth(ADMIN, Some(PASSWORD))
                        .header("content-type", "application/json")
                        .body(body.clone()).send().await,
                _ => ops.http.post(format!("{}/api/v1/admin/convene", ops.url))
                        .basic_auth(ADMIN, Some(PASSWORD))
                        .header("content-type", "application/json")
                        .body(body.clone()).send().await,
            };
            let r = r.expect("send");
            let s = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (s, v)
        });
        prop_assert!((400..500).contains(&status.0), "target {} got {} {}", target, status.0, status.1);
        prop_assert!(status.1["code"].is_string(), "no JSON error: {}", status.1);
    });
}
