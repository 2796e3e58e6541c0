//! The fleet page and the login page: static HTML with a little vanilla
//! JavaScript, embedded in the binary (no build step). Labels in Vietnamese
//! (default) and English; the page reads the admin API with the session
//! cookie.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::http::{AppState, session_admin};

const FLEET_HTML: &str = include_str!("../assets/fleet.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");

fn no_cache(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    r
}

/// `GET /`: the fleet page, or a redirect to the login page.
pub async fn fleet_page(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if session_admin(&state, &headers).is_none() {
        return Redirect::to("/login").into_response();
    }
    no_cache(Html(FLEET_HTML).into_response())
}

/// `GET /login`.
pub async fn login_page() -> Response {
    no_cache(Html(LOGIN_HTML).into_response())
}
