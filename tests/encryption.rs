//! File encryption end to end on the real binary, as an administrator would use it: `recall serve` on its
//! embedded default, a root administrator signs in, generates a key for the default tenant, activates it
//! and switches encryption on (GraphQL); a SIPREC call from `recall loadgen` is recorded; the stored file
//! is encrypted on disk, plays back decrypted over HTTP (also in ranges) and decodes to the call's length;
//! a backup job copies it, still encrypted, to a storage target, and a restore job puts it back when the
//! stored file is lost; and no password, passphrase or key material appears in any log line, in the
//! recorder's journals, in the backup archive's descriptions or in any event of the audit trail.

mod common;

#[path = "../recorder/tests/common/decode.rs"]
mod decode;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{recall, start, Server};
use serde_json::Value;

const PASSWORD: &str = "root's long password 1";
const PASSPHRASE: &str = "the vault passphrase for exports";

fn data(body: &Value) -> &Value {
    assert!(body["errors"].is_null(), "{body}");
    &body["data"]
}

fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn an_encrypted_call_is_recorded_played_back_and_nothing_secret_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("recall-data");
    let server: Server = start(&data_dir);
    let made = recall(
        &["admin", "create-root", "--username", "root", "--password-stdin"],
        &data_dir,
        &format!("{PASSWORD}\n"),
    );
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    let signed_in =
        server.graphql(&format!(r#"mutation {{ signIn(username: "root", password: "{PASSWORD}") {{ token }} }}"#));
    let token = data(&signed_in)["signIn"]["token"].as_str().expect("token").to_owned();
    let tenants = server.graphql_as(&token, "{ tenants(first: 10) { edges { node { id name } } } }");
    let tenant = data(&tenants)["tenants"]["edges"][0]["node"]["id"].as_str().expect("the default tenant").to_owned();

    let refused = server.graphql_as(
        &token,
        &format!(r#"mutation {{ setFileEncryption(tenantId: "{tenant}", enabled: true) {{ id }} }}"#),
    );
    assert!(refused["errors"][0]["message"].as_str().unwrap_or_default().contains("encryption key"), "{refused}");
    let generated = server.graphql_as(
        &token,
        &format!(r#"mutation {{ generateEncryptionKey(input: {{ tenantId: "{tenant}", name: "Main" }}) {{ id encryptionKey {{ fingerprint holders }} }} }}"#),
    );
    let key = data(&generated)["generateEncryptionKey"]["id"].as_str().expect("key id").to_owned();
    let fingerprint =
        data(&generated)["generateEncryptionKey"]["encryptionKey"]["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(fingerprint.len(), 64);
    data(&server.graphql_as(&token, &format!(r#"mutation {{ activateEncryptionKey(keyId: "{key}") {{ id }} }}"#)));
    data(&server.graphql_as(
        &token,
        &format!(r#"mutation {{ setFileEncryption(tenantId: "{tenant}", enabled: true) {{ id }} }}"#),
    ));
    // The recorder reads the directory every second.
    std::thread::sleep(Duration::from_secs(3));

    let loadgen = std::process::Command::new(env!("CARGO_BIN_EXE_recall"))
        .args(["loadgen", "--target", &server.sip_address, "--calls", "1", "--duration", "4"])
        .args(["--rtp-ports", "47000-47999", "--json"])
        .output()
        .expect("recall loadgen runs");
    let report = String::from_utf8_lossy(&loadgen.stdout);
    assert!(loadgen.status.success(), "{report}{}", String::from_utf8_lossy(&loadgen.stderr));

    let recording = wait_for("the recording to be stored", Duration::from_secs(60), || {
        let calls = server.graphql_as(&token, "{ calls(first: 5) { edges { node { id recording { location encryptionKeyId audioUrl downloadUrl durationMs } } } } }");
        let node = data(&calls)["calls"]["edges"][0]["node"].clone();
        (!node["recording"].is_null()).then_some(node)
    });
    assert_eq!(recording["recording"]["encryptionKeyId"], key.as_str());
    let location = recording["recording"]["location"].as_str().expect("location");
    assert!(location.ends_with(".mp3.enc"), "{location}");
    let stored = std::fs::read(data_dir.join("recordings").join(location)).expect("the stored file");
    assert!(stored.starts_with(b"RCLENC"), "the file on disk is encrypted");

    let audio_url = recording["recording"]["audioUrl"].as_str().expect("url").to_owned();
    let (status, headers, audio) = server.http("GET", &audio_url, Some(&token), &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&audio));
    assert!(headers.iter().any(|(n, v)| n == "content-type" && v == "audio/mpeg"), "{headers:?}");
    let (rate, channels) = decode::decode(audio.clone(), "mp3");
    assert_eq!(channels.len(), 2, "stereo");
    let seconds = channels[0].len() as f64 / f64::from(rate);
    assert!((3.0..6.0).contains(&seconds), "decodes to about the call's length: {seconds} s");
    let (status, _, part) = server.http("GET", &audio_url, Some(&token), &[("Range", "bytes=1000-1999")], b"");
    assert_eq!(status, 206);
    assert_eq!(part, audio[1000..2000]);
    let (status, _, _) = server.http("GET", &audio_url, None, &[], b"");
    assert_eq!(status, 401, "no playback without a session");

    let exported = server.graphql_as(
        &token,
        &format!(r#"mutation {{ exportEncryptionKey(keyId: "{key}", passphrase: "{PASSPHRASE}") {{ issuedToken }} }}"#),
    );
    let pem = data(&exported)["exportEncryptionKey"]["issuedToken"].as_str().expect("pem").to_owned();
    assert!(pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));

    // A backup job copies the recording, still encrypted, to a storage target; when the stored file is lost,
    // a restore job from that backup puts it back and it plays again (the job runner of `recall serve`).
    let vault = dir.path().join("vault");
    std::fs::create_dir_all(&vault).expect("the backup directory");
    let target = server.graphql_as(
        &token,
        &format!(
            r#"mutation {{ addStorageTarget(input: {{ tenantId: "{tenant}", name: "Backups", settings: {{ localFilesystem: {{ path: "{}" }} }} }}) {{ id }} }}"#,
            vault.display()
        ),
    );
    let target = data(&target)["addStorageTarget"]["id"].as_str().expect("target id").to_owned();
    let backup = server.graphql_as(
        &token,
        &format!(
            r#"mutation {{ defineBackupJob(input: {{ tenantId: "{tenant}", name: "Nightly", storageTargetId: "{target}", path: "recall/nightly", schedule: {{ firstAt: "2026-01-01T02:00:00Z", everyHours: 24 }} }}) {{ id job {{ kind schedule {{ everyHours }} }} }} }}"#
        ),
    );
    assert_eq!(data(&backup)["defineBackupJob"]["job"]["schedule"]["everyHours"], 24, "{backup}");
    let backup = data(&backup)["defineBackupJob"]["id"].as_str().expect("job id").to_owned();
    let run_finished = |job: &str| {
        data(&server.graphql_as(&token, &format!(r#"mutation {{ runJob(id: "{job}") {{ id }} }}"#)));
        wait_for("the job run to finish", Duration::from_secs(60), || {
            let runs = server.graphql_as(
                &token,
                &format!(r#"{{ job(id: "{job}") {{ runs(first: 1) {{ state error notes progress {{ total copied skipped failed }} }} }} }}"#),
            );
            let run = data(&runs)["job"]["runs"][0].clone();
            assert_ne!(run["state"], "failed", "{run}");
            (run["state"] == "finished").then_some(run)
        })
    };
    let run = run_finished(&backup);
    assert_eq!(run["progress"]["copied"], 1, "{run}");
    let archived = files_under(&vault)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".mp3.enc"))
        .expect("the recording is in the archive");
    assert_eq!(std::fs::read(&archived).expect("archived file"), stored, "copied exactly as stored (encrypted)");

    std::fs::remove_file(data_dir.join("recordings").join(location)).expect("the stored file is lost");
    let (status, _, _) = server.http("GET", &audio_url, Some(&token), &[], b"");
    assert_ne!(status, 200, "nothing to play while the file is lost");
    let restore = server.graphql_as(
        &token,
        &format!(
            r#"mutation {{ defineRestoreJob(input: {{ tenantId: "{tenant}", name: "Put back", storageTargetId: "{target}", path: "recall/nightly" }}) {{ id }} }}"#
        ),
    );
    let restore = data(&restore)["defineRestoreJob"]["id"].as_str().expect("job id").to_owned();
    let run = run_finished(&restore);
    assert_eq!(run["progress"]["copied"], 1, "put back: {run}");
    let (status, _, again) = server.http("GET", &audio_url, Some(&token), &[], b"");
    assert_eq!((status, again == audio), (200, true), "plays back as before");

    // Every log line so far, and the recorder's journals, are free of secrets.
    std::thread::sleep(Duration::from_secs(1));
    let mut lines: Vec<String> = server.seen.clone();
    lines.extend(server.logs.try_iter());
    assert!(lines.len() > 10, "the server logged its work");
    let mut needles: Vec<String> = pem.lines().filter(|l| !l.starts_with("-----")).map(str::to_owned).collect();
    needles.extend([PASSWORD.to_owned(), PASSPHRASE.to_owned(), token.clone()]);
    let journals: Vec<String> = files_under(&data_dir.join("outbox"))
        .into_iter()
        .chain(files_under(&vault).into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")))
        .chain(files_under(&data_dir.join("spool")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    // And every event of the audit trail (what the log holds about administration and access).
    let mut events = Vec::new();
    let mut after = String::new();
    loop {
        let page = server.graphql_as(
            &token,
            &format!(r#"{{ auditTrail(first: 100{after}) {{ edges {{ node {{ action payload }} }} pageInfo {{ hasNextPage endCursor }} }} }}"#),
        );
        let trail = &data(&page)["auditTrail"];
        events.extend(trail["edges"].as_array().expect("edges").iter().map(|e| e["node"].to_string()));
        if trail["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = format!(r#", after: "{}""#, trail["pageInfo"]["endCursor"].as_str().expect("cursor"));
    }
    assert!(events.iter().any(|e| e.contains("EncryptionKeyExported")), "the export is in the audit trail");
    assert!(events.iter().any(|e| e.contains("RecordingAccessed")), "the playback is in the audit trail");
    for text in lines.iter().chain(journals.iter()).chain(events.iter()) {
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "a secret in: {text}");
        }
    }
    server.stop();
}
