//! The GraphiQL explorer at `GET /graphql`: one HTML page and the files it loads, all embedded in the
//! binary and served by recall itself. It must never load anything from another origin: recording servers
//! often have no internet, and the page's Content-Security-Policy forbids it anyway.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::{Digest, Sha256};

/// Where the page is served; `POST` on the same path answers queries.
pub const PAGE_PATH: &str = "/graphql";
/// Where the page's files are served, each as `<stem>.<content hash>.<ext>`.
pub const ASSETS_PATH: &str = "/graphql/assets";

/// What GraphiQL needs and nothing more. Styles allow `'unsafe-inline'` because GraphiQL's dialogs
/// (settings, short keys; Radix with react-remove-scroll) inject a `<style>` element when they open: with
/// `style-src 'self'` alone Chromium refuses it. Scripts need nothing inline, so inline scripts and `eval`
/// stay forbidden. The fonts and icons of `graphiql.min.css` are `data:` URLs inside the stylesheet itself.
/// `'self'` in `connect-src` also covers `ws:`/`wss:` to this host (CSP Level 3; checked in Chromium), for the
/// subscriptions that will come at `/graphql/ws`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
/// The name is content-addressed, so a browser may keep a file for as long as it likes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A file the page loads: the vendored GraphiQL and React builds (see `assets/graphiql/README.md`) and our
/// own start-up script and stylesheet.
#[derive(Debug)]
struct Asset {
    /// The served name, with a hash of the content in it.
    name: String,
    content_type: &'static str,
    body: &'static [u8],
}

impl Asset {
    fn new(file: &str, content_type: &'static str, body: &'static [u8]) -> Self {
        let hash = hex::encode(&Sha256::digest(body)[..8]);
        let name = match file.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{file}.{hash}"),
        };
        Self { name, content_type, body }
    }

    fn url(&self) -> String {
        format!("{ASSETS_PATH}/{}", self.name)
    }
}

/// The files, in the order the page loads them.
#[derive(Debug)]
struct Assets {
    graphiql_css: Asset,
    explorer_css: Asset,
    react: Asset,
    react_dom: Asset,
    graphiql: Asset,
    explorer_js: Asset,
}

impl Assets {
    fn all(&self) -> [&Asset; 6] {
        [&self.graphiql_css, &self.explorer_css, &self.react, &self.react_dom, &self.graphiql, &self.explorer_js]
    }
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    graphiql_css: Asset::new("graphiql.min.css", CSS, include_bytes!("../assets/graphiql/graphiql.min.css")),
    explorer_css: Asset::new("explorer.css", CSS, include_bytes!("../assets/explorer.css")),
    react: Asset::new(
        "react.production.min.js",
        JAVASCRIPT,
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    react_dom: Asset::new(
        "react-dom.production.min.js",
        JAVASCRIPT,
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    graphiql: Asset::new("graphiql.min.js", JAVASCRIPT, include_bytes!("../assets/graphiql/graphiql.min.js")),
    explorer_js: Asset::new("explorer.js", JAVASCRIPT, include_bytes!("../assets/explorer.js")),
});

static PAGE: LazyLock<String> = LazyLock::new(|| {
    let a = &*ASSETS;
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>recall · GraphQL explorer</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{graphiql_css}">
<link rel="stylesheet" href="{explorer_css}">
</head>
<body>
<div id="graphiql"><noscript>The GraphQL explorer needs JavaScript. The API itself answers POST {PAGE_PATH}.</noscript></div>
<script src="{react}"></script>
<script src="{react_dom}"></script>
<script src="{graphiql}"></script>
<script src="{explorer_js}"></script>
</body>
</html>
"#,
        graphiql_css = a.graphiql_css.url(),
        explorer_css = a.explorer_css.url(),
        react = a.react.url(),
        react_dom = a.react_dom.url(),
        graphiql = a.graphiql.url(),
        explorer_js = a.explorer_js.url(),
    )
});

/// `GET /graphql` (the page) and `GET /graphql/assets/{file}`. `POST /graphql` stays with the API; axum
/// merges the two method routers of `/graphql`.
pub fn routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(PAGE_PATH, get(page)).route(&format!("{ASSETS_PATH}/{{file}}"), get(asset))
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
            // The page names its files by content hash; it must itself be revalidated to pick up new ones.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("same-origin")),
        ],
        PAGE.as_str(),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.all().into_iter().find(|a| a.name == file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let headers: [(HeaderName, HeaderValue); 3] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_names_carry_a_content_hash_and_keep_their_extension() {
        let asset = Asset::new("graphiql.min.js", JAVASCRIPT, b"x");
        assert!(asset.name.starts_with("graphiql.min."), "{}", asset.name);
        assert!(asset.name.ends_with(".js"), "{}", asset.name);
        assert_eq!(asset.name.len(), "graphiql.min..js".len() + 16, "{}", asset.name);
        assert_ne!(asset.name, Asset::new("graphiql.min.js", JAVASCRIPT, b"y").name);
    }

    #[test]
    fn the_page_references_every_asset_once() {
        for asset in ASSETS.all() {
            assert_eq!(PAGE.matches(&asset.url()).count(), 1, "{}", asset.name);
        }
    }
}
