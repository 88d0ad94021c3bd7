//! The explorer in a real browser: recall's router on 127.0.0.1:0 (a real Postgres behind it), Debian's
//! Chromium driven by Playwright (`tests/browser/explorer.mjs`, run with node) opens `GET /graphql`, types
//! `{ version }`, runs it and must read the version in the result pane. `scripts/test` installs Chromium and
//! playwright-core when they are missing.

mod common;

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use recall_graphql::router;
use sqlx::PgPool;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// Longer than the script's own watchdog (120 s), so that the script explains a hang itself.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(150);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Fails (never skips) when a tool is missing, and says how to get it.
fn require_tools() {
    let hint = "scripts/test installs them; by hand: apt-get install chromium nodejs npm && \
                (cd graphql/tests/browser && npm ci)";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is not on PATH; {hint}");
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(playwright.is_file(), "{} is missing; {hint}", playwright.display());
    assert!(chromium().is_file(), "no Chromium at {} (set CHROMIUM to another); {hint}", chromium().display());
}

/// The node process driving the browser. Dropping it ends the run: SIGTERM first, on which Playwright closes
/// Chromium, then SIGKILL if it has not gone after a few seconds.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = self.0.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.0.start_kill();
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_browser_runs_a_query_in_the_explorer_and_sees_the_result(pool: PgPool) {
    require_tools();

    let (state, shutdown) = common::state(pool, "browser-test", "9.9.9").await;
    let app = router(state);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(
        axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).into_future(),
    );

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("explorer.png");
    let mut child = Command::new("node")
        .current_dir(browser_dir())
        .arg("explorer.mjs")
        .arg(format!("http://{address}/graphql"))
        .arg("9.9.9")
        .arg(&screenshot)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start node");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut driver = Driver(child);

    let (mut out, mut err) = (String::new(), String::new());
    let run = async {
        let (o, e, status) =
            tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err), driver.0.wait());
        o.and(e).and(status)
    };
    let status = tokio::time::timeout(DRIVER_TIMEOUT, run).await;
    drop(driver);
    shutdown.cancel();
    let _ = server.await;

    let status = match status {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => panic!("could not run the browser driver: {e}"),
        Err(_) => panic!("the browser driver did not finish in {DRIVER_TIMEOUT:?}\nstdout: {out}\nstderr: {err}"),
    };
    assert!(
        status.success(),
        "the explorer did not work in Chromium ({status}); screenshot: {}\nstdout: {out}\nstderr: {err}",
        screenshot.display()
    );
    assert!(out.contains(r#""version":"9.9.9""#), "stdout: {out}\nstderr: {err}");
}
