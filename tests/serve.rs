//! `recall serve` on its embedded default, as a newcomer runs it: from an empty data directory it starts a
//! private Postgres, answers `health`, lets `recall admin create-root` make the first root administrator
//! beside it (once) and `recall replay` rebuild the read model beside it, stops cleanly on Ctrl-C
//! (SIGINT), and starts again on the same directory with its data intact.

mod common;

use common::{log_head, recall, start};

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
