//! Uploads to an S3-compatible target (moto, from commands/tests/support) through the store the binary
//! builds for a tenant's S3 storage target, with the endpoint going away while recordings wait: nothing
//! leaves the spool while S3 is unreachable, and every recording is stored, once, when it is back.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{fast, wait_for, TENANT};
use futures::future::BoxFuture;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use recall_commands::storage_probe::{object_store_for, ResolvedStorage};
use recall_domain::recording_policy::AudioFormat;
use recall_domain::secret::SecretRef;
use recall_domain::storage_target::StorageKind;
use recall_recorder::spool::{RecordingMeta, Spool, SpooledRecording};
use recall_recorder::upload::{UploadPort, Uploader};
use secrecy::SecretString;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const BUCKET: &str = "recordings";

/// moto on a free port, killed when dropped.
struct Moto {
    child: Child,
    ready: serde_json::Value,
}

impl Moto {
    fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../commands/tests/support/s3_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .args(["--bucket", BUCKET])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs (scripts/test installs moto)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(120)).unwrap_or_default();
        let ready = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("moto did not start (said {line:?}); run scripts/test, which installs it"));
        Self { child, ready }
    }

    fn field(&self, name: &str) -> String {
        self.ready[name].as_str().expect("field").to_owned()
    }

    fn port(&self) -> u16 {
        u16::try_from(self.ready["port"].as_u64().expect("port")).expect("port")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP forwarder in front of moto that can be taken down (connections refused, open ones cut) and
/// brought back on the same port: the S3 endpoint going away and coming back.
struct Endpoint {
    port: u16,
    upstream: u16,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Endpoint {
    async fn up(port: u16, upstream: u16) -> JoinHandle<()> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the endpoint's port is free again");
        tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        })
    }

    async fn start(upstream: u16) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let task = Self::up(port, upstream).await;
        Self { port, upstream, task: Mutex::new(Some(task)) }
    }

    fn down(&self) {
        if let Some(task) = self.task.lock().expect("lock").take() {
            // Dropping the task drops the listener and every forwarded connection with it.
            task.abort();
        }
    }

    async fn restore(&self) {
        let task = Self::up(self.port, self.upstream).await;
        *self.task.lock().expect("lock") = Some(task);
    }
}

/// The binary's wiring for an S3 target, with the stored facts counted instead of journaled.
struct Port {
    storage: ResolvedStorage,
    reported: AtomicUsize,
}

impl UploadPort for Port {
    fn store_for<'a>(&'a self, _: &'a SpooledRecording) -> BoxFuture<'a, Result<Arc<dyn ObjectStore>, String>> {
        Box::pin(async move { object_store_for(&self.storage).map_err(|e| e.to_string()) })
    }

    fn stored<'a>(&'a self, _: &'a SpooledRecording) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.reported.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
    }
}

#[tokio::test]
async fn recordings_wait_in_the_spool_while_s3_is_unreachable_and_are_all_stored_when_it_returns() {
    let moto = Moto::start();
    let endpoint = Endpoint::start(moto.port()).await;
    let secret = SecretRef(Uuid::now_v7());
    let storage = ResolvedStorage {
        kind: StorageKind::S3 {
            endpoint: Some(format!("http://127.0.0.1:{}", endpoint.port)),
            region: "us-east-1".into(),
            bucket: BUCKET.into(),
            prefix: Some("calls".into()),
            access_key_id: moto.field("access_key_id"),
            secret_access_key: secret,
            path_style: true,
        },
        secrets: BTreeMap::from([(secret, SecretString::from(moto.field("secret_access_key")))]),
    };
    let port = Arc::new(Port { storage, reported: AtomicUsize::new(0) });
    let dir = tempfile::tempdir().expect("temp dir");
    let spool = Spool::open(dir.path().join("spool"), 1 << 30).expect("spool");

    endpoint.down();
    let (uploader, queue) = Uploader::new(spool.clone(), port.clone(), fast());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(uploader.run(shutdown.clone()));
    let mut expected = Vec::new();
    for n in 0..3u8 {
        let call_id = Uuid::now_v7();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i as u8).wrapping_mul(7).wrapping_add(n)).collect();
        let mut writer = spool.create(call_id, "mp3", Duration::from_secs(1)).expect("spool file");
        writer.write(&bytes).expect("written");
        let meta = RecordingMeta {
            tenant_id: TENANT,
            storage_target_id: Some(Uuid::nil()),
            object_path: format!("{TENANT}/2026/12/03/{call_id}.mp3"),
            format: AudioFormat::Mp3Stereo32,
            duration_ms: 50_000,
            sample_rate: None,
            encryption: None,
        };
        queue.push(writer.finish(meta.clone()).expect("finished"));
        expected.push((meta.object_path, bytes));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(port.reported.load(Ordering::SeqCst), 0, "nothing is stored while S3 is unreachable");
    assert_eq!(spool.recover().expect("spool").ready.len(), 3, "everything waits in the spool");

    endpoint.restore().await;
    wait_for(Duration::from_secs(120), || spool.recover().map(|r| r.ready.is_empty()).unwrap_or(false)).await;
    assert_eq!(port.reported.load(Ordering::SeqCst), 3, "each recording reported once");
    let store = object_store_for(&port.storage).expect("store");
    for (path, bytes) in &expected {
        let object = store.get(&object_store::path::Path::from(path.as_str())).await.expect("stored");
        assert_eq!(&object.bytes().await.expect("bytes")[..], &bytes[..], "{path}");
    }
    // The whole bucket (moto refuses the signature of a list under a prefix): the three objects, under it.
    let mut kind = port.storage.kind.clone();
    if let StorageKind::S3 { prefix, .. } = &mut kind {
        *prefix = None;
    }
    let whole = ResolvedStorage { kind, secrets: port.storage.secrets.clone() };
    let listed: Vec<String> = object_store_for(&whole)
        .expect("store")
        .list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 3, "no duplicate or partial objects: {listed:?}");
    assert!(listed.iter().all(|key| key.starts_with("calls/")), "{listed:?}");
    shutdown.cancel();
    task.await.expect("uploader");
}
