//! Any text as an imported PEM, with and without a passphrase. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recall_crypto::KeyImport;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = KeyImport::from_pem(text, None);
    let _ = KeyImport::from_pem(text, Some("passphrase"));
});
