//! `recall serve` on its embedded default, as a newcomer runs it: from an empty data directory it starts a
//! private Postgres, answers `health`, lets `recall admin create-root` make the first root administrator
//! beside it (once) and `recall replay` rebuild the read model beside it, stops cleanly on Ctrl-C
//! (SIGINT), and starts again on the same directory with its data intact.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

struct Server {
    child: Child,
    address: String,
    logs: mpsc::Receiver<String>,
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recall"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--http",
            "127.0.0.1:0",
            "--sip",
            "127.0.0.1:0",
            "--site",
            "first-run",
            "--node",
            "n1",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recall starts");
    let stderr = child.stderr.take().expect("stderr");
    let (lines, logs) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Owned by the server from here on, so a failed start still reaps the process (see Drop).
    let mut server = Server { child, address: String::new(), logs };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = server
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("recall reports its address before the time limit");
        let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(address) = entry["fields"]["address"].as_str() {
            server.address = address.to_owned();
            return server;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A test that failed midway must not leave recall (and its Postgres) running.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn graphql(&self, query: &str) -> Value {
        let body = serde_json::json!({ "query": query }).to_string();
        let mut stream = TcpStream::connect(&self.address).expect("connect");
        write!(
            stream,
            "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            body.len()
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).expect("JSON body")
    }

    /// Ctrl-C, then wait for a clean exit.
    fn stop(mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT).expect("SIGINT");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let logs: Vec<String> = self.logs.try_iter().collect();
                assert!(status.success(), "recall exited with {status}: {logs:#?}");
                return;
            }
            assert!(Instant::now() < deadline, "recall did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The log head once every appended event is sequenced.
fn log_head(server: &Server) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = server.graphql("{ version health { ok site node logHead unsequencedEvents } }");
        let health = &body["data"]["health"];
        assert_eq!(health["ok"], true, "{body}");
        assert_eq!(health["site"], "first-run");
        assert_eq!(health["node"], "n1");
        assert_eq!(body["data"]["version"], env!("CARGO_PKG_VERSION"));
        if health["unsequencedEvents"] == 0 {
            return health["logHead"].as_u64().expect("logHead");
        }
        assert!(Instant::now() < deadline, "events stay unsequenced: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `recall` with `args`, `stdin` on its standard input.
fn recall(args: &[&str], data_dir: &Path, stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recall"))
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("DATABASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("recall runs");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("recall finishes")
}

#[test]
fn serve_runs_the_embedded_default_stops_cleanly_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("recall-data");

    let server = start(&data_dir);
    // The node's start, the four pre-defined roles, and the default tenant (created, trusting loopback).
    assert_eq!(log_head(&server), 7);

    // The first root administrator, made from the command line beside the running server.
    let create = ["admin", "create-root", "--username", "root", "--password-stdin"];
    let made = recall(&create, &data_dir, "correct horse battery\n");
    let stdout = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "{stdout}{}", String::from_utf8_lossy(&made.stderr));
    assert!(stdout.contains("created root administrator root"), "{stdout}");
    assert_eq!(log_head(&server), 8);
    let again = recall(&create, &data_dir, "another long password\n");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"), "{again:?}");
    // The read model is rebuilt from the log beside the running server.
    let replayed = recall(&["replay"], &data_dir, "");
    let stdout = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{stdout}{}", String::from_utf8_lossy(&replayed.stderr));
    for projection in ["directory", "calls", "audit"] {
        assert!(stdout.contains(&format!("rebuilt {projection} up to position 8")), "{stdout}");
    }
    let unknown = recall(&["replay", "--projection", "nope"], &data_dir, "");
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no projection is called"), "{unknown:?}");
    let argument = recall(&["admin", "create-root", "--username", "x"], &data_dir, "");
    assert!(String::from_utf8_lossy(&argument.stderr).contains("--password-stdin"), "{argument:?}");
    server.stop();
    assert!(!data_dir.join("postgres/postmaster.pid").exists(), "the embedded Postgres was stopped with recall");

    let server = start(&data_dir);
    // Start, roles, default tenant, root, clean stop, start again (roles and tenant exist already): nothing
    // of the first run is lost.
    assert_eq!(log_head(&server), 10);
    server.stop();
}
