//! The explorer's page and files over HTTP: a strict Content-Security-Policy, nothing from another origin,
//! every referenced file served with the right type, unknown names refused. The browser test
//! (`explorer_in_browser.rs`) checks that the page really works.

mod common;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use recall_graphql::explorer::{self, CONTENT_SECURITY_POLICY};
use recall_graphql::router;
use serde_json::{json, Value};
use sqlx::PgPool;
use tower::ServiceExt;

async fn get(app: &axum::Router, uri: &str) -> (Response, Vec<u8>) {
    let response =
        app.clone().oneshot(Request::get(uri).body(Body::empty()).expect("request")).await.expect("response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn header_of(response: &Response, name: header::HeaderName) -> &str {
    response.headers().get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// The values of every `src="…"` and `href="…"` attribute in the page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attribute) {
            let rest = &html[at + attribute.len()..];
            found.push(rest[..rest.find('"').expect("closing quote")].to_owned());
        }
    }
    found
}

async fn page() -> String {
    let app = explorer::routes();
    let (response, body) = get(&app, "/graphql").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(header_of(&response, header::CONTENT_TYPE).starts_with("text/html"), "{:?}", response.headers());
    String::from_utf8(body).expect("utf-8")
}

#[tokio::test]
async fn the_page_is_html_under_a_strict_content_security_policy() {
    let app = explorer::routes();
    let (response, body) = get(&app, "/graphql").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CONTENT_TYPE), "text/html; charset=utf-8");
    let csp = header_of(&response, header::CONTENT_SECURITY_POLICY);
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for required in ["default-src 'self'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"] {
        assert!(directives.contains(&required), "{required} missing from {csp}");
    }
    assert!(!csp.contains("unsafe-eval") && !csp.contains("http") && !csp.contains('*'), "{csp}");
    let script_src = directives.iter().find(|d| d.starts_with("script-src")).expect("script-src");
    assert!(!script_src.contains("unsafe-inline"), "{csp}");

    let html = String::from_utf8(body).expect("utf-8");
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.contains(r#"<div id="graphiql">"#), "{html}");
    // No inline script: every <script> loads a file (the CSP would refuse an inline one).
    assert_eq!(html.matches("<script").count(), html.matches("<script src=\"/graphql/assets/").count(), "{html}");
}

#[tokio::test]
async fn the_page_references_nothing_from_another_origin() {
    let html = page().await;
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let references = references(&html);
    assert!(references.len() >= 6, "{references:?}");
    for reference in references {
        let same_origin = reference.starts_with('/') && !reference.starts_with("//");
        assert!(same_origin || reference == "data:,", "{reference} is not a path on this origin");
    }
}

#[tokio::test]
async fn every_file_the_page_references_is_served_with_its_type() {
    let app = explorer::routes();
    let html = page().await;
    let assets: Vec<String> = references(&html).into_iter().filter(|r| r.starts_with("/graphql/assets/")).collect();
    assert_eq!(assets.iter().filter(|a| a.ends_with(".js")).count(), 4, "{assets:?}");
    assert_eq!(assets.iter().filter(|a| a.ends_with(".css")).count(), 2, "{assets:?}");
    for asset in assets {
        let (response, body) = get(&app, &asset).await;
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let expected =
            if asset.ends_with(".js") { "text/javascript; charset=utf-8" } else { "text/css; charset=utf-8" };
        assert_eq!(header_of(&response, header::CONTENT_TYPE), expected, "{asset}");
        assert_eq!(header_of(&response, header::CACHE_CONTROL), "public, max-age=31536000, immutable", "{asset}");
        assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{asset}");
        assert!(body.len() > 100, "{asset} is {} bytes", body.len());
    }
}

#[tokio::test]
async fn the_vendored_builds_are_served_as_committed() {
    let app = explorer::routes();
    let html = page().await;
    let committed: [(&str, &str, &[u8]); 4] = [
        ("graphiql.min.", ".js", include_bytes!("../assets/graphiql/graphiql.min.js")),
        ("graphiql.min.", ".css", include_bytes!("../assets/graphiql/graphiql.min.css")),
        ("react.production.min.", ".js", include_bytes!("../assets/graphiql/react.production.min.js")),
        ("react-dom.production.min.", ".js", include_bytes!("../assets/graphiql/react-dom.production.min.js")),
    ];
    let references = references(&html);
    for (stem, extension, bytes) in committed {
        let prefix = format!("/graphql/assets/{stem}");
        let url = references.iter().find(|r| r.starts_with(&prefix) && r.ends_with(extension)).expect(stem);
        let (response, body) = get(&app, url).await;
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        assert!(body == bytes, "{url} differs from the committed file");
    }
}

#[tokio::test]
async fn unknown_or_stale_asset_names_are_not_found() {
    let app = explorer::routes();
    for uri in [
        "/graphql/assets/nope.js",
        "/graphql/assets/graphiql.min.js",
        "/graphql/assets/graphiql.min.0000000000000000.js",
        "/graphql/assets/..%2Fsrc%2Flib.rs",
        "/graphql/assets/",
        "/graphql/assets/README.md",
    ] {
        let (response, _) = get(&app, uri).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn the_api_router_serves_the_explorer_beside_the_api(pool: PgPool) {
    let (state, shutdown) = common::state(pool, "explorer-test", "9.9.9").await;
    let app = router(state);

    let (response, body) = get(&app, "/graphql").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header_of(&response, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY);
    let html = String::from_utf8(body).expect("utf-8");
    for asset in references(&html).into_iter().filter(|r| r.starts_with("/graphql/assets/")) {
        assert_eq!(get(&app, &asset).await.0.status(), StatusCode::OK, "{asset}");
    }

    let request = Request::post("/graphql")
        .header("content-type", "application/json")
        .body(Body::from(json!({"query": "{ version }"}).to_string()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(body["data"]["version"], "9.9.9");
    shutdown.cancel();
}
