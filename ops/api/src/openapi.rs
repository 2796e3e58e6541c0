//! The OpenAPI document of the HTTP API, generated from the wire types.
//!
//! The checked-in copy is `ops/api/openapi.json`; the test
//! `openapi_document_is_up_to_date` fails when it differs from what this
//! module generates. Regenerate with:
//!
//! ```text
//! DIEMCAU_UPDATE_OPENAPI=1 cargo test -p diemcau-ops-api openapi_document_is_up_to_date
//! ```

use utoipa::OpenApi;

#[allow(unused_imports)]
use crate::types::*;

// The functions below exist only to carry the path descriptions; the
// handlers live in `ops/server`.
#[allow(dead_code)]
mod paths {
    use crate::types::*;

    #[utoipa::path(post, path = "/api/v1/enrol", request_body = EnrolRequest, tag = "device",
        responses((status = 200, body = EnrolResponse),
                  (status = 400, body = ApiError, description = "malformed or invalid body"),
                  (status = 403, body = ApiError, description = "claim token unknown, expired or used up"),
                  (status = 429, body = ApiError, description = "too many enrolment attempts")))]
    fn enrol() {}

    #[utoipa::path(get, path = "/api/v1/device/schedule", tag = "device", security(("device_signature" = [])),
        responses((status = 200, body = Schedule), (status = 401, body = ApiError), (status = 403, body = ApiError, description = "revoked")))]
    fn schedule() {}

    #[utoipa::path(post, path = "/api/v1/device/heartbeat", request_body = Heartbeat, tag = "device", security(("device_signature" = [])),
        responses((status = 200, body = HeartbeatAck), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
    fn heartbeat() {}

    #[utoipa::path(post, path = "/api/v1/device/events", request_body = EventBatch, tag = "device", security(("device_signature" = [])),
        responses((status = 200, body = EventsAck), (status = 400, body = ApiError), (status = 401, body = ApiError), (status = 403, body = ApiError)))]
    fn events() {}

    #[utoipa::path(get, path = "/api/v1/device/push", tag = "device", security(("device_signature" = [])),
        responses((status = 200, description = "text/event-stream; each `data:` is a JSON PushEvent", body = PushEvent),
                  (status = 401, body = ApiError), (status = 403, body = ApiError)))]
    fn push() {}

    #[utoipa::path(get, path = "/api/v1/admin/fleet", tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 200, body = FleetView), (status = 401, body = ApiError)))]
    fn fleet() {}

    #[utoipa::path(get, path = "/api/v1/admin/devices/{id}", tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        params(("id" = String, Path, description = "device id")),
        responses((status = 200, body = DeviceDetail), (status = 404, body = ApiError)))]
    fn device() {}

    #[utoipa::path(post, path = "/api/v1/admin/devices/{id}/revoke", tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        params(("id" = String, Path, description = "device id")),
        responses((status = 204), (status = 404, body = ApiError)))]
    fn revoke() {}

    #[utoipa::path(get, path = "/api/v1/admin/communes", tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 200, body = Vec<Commune>)))]
    fn communes() {}

    #[utoipa::path(post, path = "/api/v1/admin/communes", request_body = Commune, tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 201, body = Commune), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
    fn add_commune() {}

    #[utoipa::path(get, path = "/api/v1/admin/meetings", tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 200, body = Vec<Meeting>)))]
    fn meetings() {}

    #[utoipa::path(post, path = "/api/v1/admin/meetings", request_body = CreateMeeting, tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 201, body = Meeting), (status = 400, body = ApiError), (status = 502, body = ApiError, description = "Janus refused or unreachable")))]
    fn create_meeting() {}

    #[utoipa::path(post, path = "/api/v1/admin/convene", request_body = ConveneRequest, tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 201, body = ConveneResponse), (status = 400, body = ApiError), (status = 502, body = ApiError)))]
    fn convene() {}

    #[utoipa::path(post, path = "/api/v1/admin/tokens", request_body = CreateToken, tag = "admin", security(("admin_basic" = []), ("admin_session" = [])),
        responses((status = 201, body = TokenCreated), (status = 400, body = ApiError)))]
    fn create_token() {}
}

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let c = openapi.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "device_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`Diemcau-Ed25519 device=ID,ts=MS,nonce=N,sig=BASE64`; see ops/api/src/auth.rs",
            ))),
        );
        c.add_security_scheme(
            "admin_basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
        c.add_security_scheme(
            "admin_session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("diemcau_session"))),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "diemcau-ops", description = "District control plane API: device enrolment, schedule, heartbeats, push; admin API.", version = "1"),
    paths(paths::enrol, paths::schedule, paths::heartbeat, paths::events, paths::push,
          paths::fleet, paths::device, paths::revoke, paths::communes, paths::add_commune,
          paths::meetings, paths::create_meeting, paths::convene, paths::create_token),
    modifiers(&Security)
)]
struct ApiDoc;

/// The OpenAPI document as pretty JSON (with a trailing newline).
pub fn document() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn openapi_document_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::document();
        if std::env::var_os("DIEMCAU_UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).expect("write openapi.json");
            return;
        }
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "ops/api/openapi.json is stale; regenerate with \
             DIEMCAU_UPDATE_OPENAPI=1 cargo test -p diemcau-ops-api openapi_document_is_up_to_date"
        );
    }
}
