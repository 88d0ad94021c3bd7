//! What the binary's tests share: `recall serve` on a fresh embedded default as a child process, GraphQL and
//! plain HTTP requests to it, and `recall` subcommands beside it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

pub struct Server {
    /// Every log line (JSON) the server wrote so far that a test has not taken yet.
    pub child: Child,
    pub address: String,
    pub sip_address: String,
    pub logs: mpsc::Receiver<String>,
    /// The lines read while starting.
    pub seen: Vec<String>,
}

pub fn start(data_dir: &Path) -> Server {
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
    let mut server = Server { child, address: String::new(), sip_address: String::new(), logs, seen: Vec::new() };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let line = server
            .logs
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("recall reports its address before the time limit");
        server.seen.push(line.clone());
        let Ok(entry) = serde_json::from_str::<Value>(&line) else { continue };
        if let Some(address) = entry["fields"]["sip_address"].as_str() {
            server.sip_address = address.to_owned();
        }
        if let Some(address) = entry["fields"]["address"].as_str() {
            server.address = address.to_owned();
        }
        // The HTTP address is logged when it is bound, the recorder's once it runs; both are needed.
        if !server.address.is_empty() && !server.sip_address.is_empty() {
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
    pub fn graphql(&self, query: &str) -> Value {
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

    /// GraphQL with a bearer token.
    pub fn graphql_as(&self, token: &str, query: &str) -> Value {
        let body = serde_json::json!({ "query": query }).to_string();
        let (status, _, bytes) =
            self.http("POST", "/graphql", Some(token), &[("Content-Type", "application/json")], body.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
        serde_json::from_slice(&bytes).expect("JSON body")
    }

    /// One HTTP/1.1 request: status, headers (lower-case names) and body.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut stream = TcpStream::connect(&self.address).expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.address,
            body.len()
        );
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).expect("request");
        stream.write_all(body).expect("body");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("response");
        let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP response");
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        let mut lines = head.lines();
        let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = response[split + 4..].to_vec();
        if headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked")) {
            body = unchunk(&body);
        }
        (status, headers, body)
    }

    /// Ctrl-C, then wait for a clean exit.
    pub fn stop(mut self) {
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
pub fn log_head(server: &Server) -> u64 {
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
pub fn recall(args: &[&str], data_dir: &Path, stdin: &str) -> std::process::Output {
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

/// The body of a `Transfer-Encoding: chunked` response.
fn unchunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else { return out };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..end]).split(';').next().unwrap_or("0").trim(), 16)
                .unwrap_or(0);
        if size == 0 {
            return out;
        }
        data = &data[end + 2..];
        out.extend_from_slice(&data[..size.min(data.len())]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}
