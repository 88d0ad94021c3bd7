//! The encrypted recording file. A small versioned header in clear (format, chunk size, nonce prefix, the
//! tenant key's id, the recording's id, the data key wrapped with the tenant key), then the audio in 64 KiB
//! chunks, each sealed with AES-256-GCM in the STREAM construction (nonce = 7-byte prefix, 32-bit chunk
//! counter, last-chunk flag; the header is every chunk's associated data), then the sealed length of the
//! final chunk. Reordered, swapped, dropped or appended chunks, a cut-off end and a changed or swapped
//! header all fail to authenticate. A failed chunk yields an error, never plain text.
//!
//! The final chunk carries the last audio bytes, then a *patch*: bytes the writer learned only at the end
//! that belong over the start of the audio (a WAV header's lengths, an MP3's LAME Info frame), since a sealed
//! chunk is never sealed twice (a nonce is never reused).
//!
//! ```text
//! header:  "RCLENC" | version u8 | header length u16 | chunk size u32 | nonce prefix [7] | key id [16]
//!          | recording id [16] | wrapped key length u16 | wrapped data key
//! chunks:  seal(i, last=false, chunk_size bytes) …  seal(n, last=true, tail | patch | patch length u32)
//! footer:  sealed length of the final chunk, u32
//! ```
//!
//! A file whose writer died has no final chunk; it is readable only when the reader is told, from the log,
//! how many chunks it was stored with (`Termination::Unterminated`).

use std::ops::Range;

use aead_stream::{NewStream, StreamBE32, StreamPrimitive};
use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Key};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{DataKey, PrivateKey, PublicKey};
use crate::{random, CryptoError};

pub const MAGIC: [u8; 6] = *b"RCLENC";
pub const FORMAT_VERSION: u8 = 1;
/// Plain bytes per chunk.
pub const CHUNK_SIZE: u32 = 64 * 1024;
/// The largest patch (bytes written over the start of the audio at the end).
pub const MAX_PATCH: usize = 4096;
const TAG: usize = 16;
const NONCE_PREFIX: usize = 7;
const FOOTER: usize = 4;
const MIN_CHUNK: u32 = 16;
const MAX_CHUNK: u32 = 1 << 20;
const MAX_HEADER: usize = 4096;

type Stream = StreamBE32<Aes256Gcm>;

/// The OAEP label a recording's data key is wrapped under: the purpose, the tenant key and the recording.
/// A wrapped key copied into another recording's header does not unwrap.
pub fn data_key_label(key_id: Uuid, recording_id: Uuid) -> Vec<u8> {
    let mut label = b"recall recording data key v1\0".to_vec();
    label.extend_from_slice(key_id.as_bytes());
    label.extend_from_slice(recording_id.as_bytes());
    label
}

fn stream(key: &DataKey, prefix: &[u8; NONCE_PREFIX]) -> Stream {
    Stream::from_aead(Aes256Gcm::new(&Key::<Aes256Gcm>::from(*key.bytes())), &(*prefix).into())
}

/// The clear header of an encrypted recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    bytes: Vec<u8>,
    chunk_size: u32,
    nonce_prefix: [u8; NONCE_PREFIX],
    key_id: Uuid,
    recording_id: Uuid,
    wrapped_key: Vec<u8>,
}

impl FileHeader {
    /// How many bytes [`FileHeader::length`] needs to read the header's length.
    pub const PREFIX_LEN: usize = 9;

    /// Whether `prefix` starts like an encrypted recording (a plain WAV or MP3 never does).
    pub fn is_encrypted(prefix: &[u8]) -> bool {
        prefix.starts_with(&MAGIC)
    }

    /// The whole header's length, from its first [`Self::PREFIX_LEN`] bytes.
    pub fn length(prefix: &[u8]) -> Result<usize, CryptoError> {
        if prefix.len() < Self::PREFIX_LEN {
            return Err(CryptoError::Malformed("shorter than a header"));
        }
        if !Self::is_encrypted(prefix) {
            return Err(CryptoError::Malformed("no RCLENC magic"));
        }
        if prefix[6] != FORMAT_VERSION {
            return Err(CryptoError::UnsupportedVersion(prefix[6]));
        }
        let length = usize::from(u16::from_be_bytes([prefix[7], prefix[8]]));
        if !(Self::PREFIX_LEN + 4 + NONCE_PREFIX + 32 + 2..=MAX_HEADER).contains(&length) {
            return Err(CryptoError::Malformed("header length out of range"));
        }
        Ok(length)
    }

    /// Reads the header at the start of `bytes` (which may go on with the chunks).
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let length = Self::length(bytes)?;
        let header = bytes.get(..length).ok_or(CryptoError::Malformed("header cut short"))?;
        let mut at = Self::PREFIX_LEN;
        let mut take = |n: usize| {
            let field = &header[at..at + n];
            at += n;
            field
        };
        let chunk_size = u32::from_be_bytes(take(4).try_into().expect("4 bytes"));
        let nonce_prefix: [u8; NONCE_PREFIX] = take(NONCE_PREFIX).try_into().expect("7 bytes");
        let key_id = Uuid::from_slice(take(16)).expect("16 bytes");
        let recording_id = Uuid::from_slice(take(16)).expect("16 bytes");
        let wrapped_len = usize::from(u16::from_be_bytes(take(2).try_into().expect("2 bytes")));
        if at + wrapped_len != length {
            return Err(CryptoError::Malformed("wrapped key length does not match the header length"));
        }
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(CryptoError::Malformed("chunk size out of range"));
        }
        Ok(Self {
            bytes: header.to_vec(),
            chunk_size,
            nonce_prefix,
            key_id,
            recording_id,
            wrapped_key: header[at..].to_vec(),
        })
    }

    fn build(chunk_size: u32, key_id: Uuid, recording_id: Uuid, wrapped_key: Vec<u8>) -> Result<Self, CryptoError> {
        let mut nonce_prefix = [0u8; NONCE_PREFIX];
        random(&mut nonce_prefix)?;
        let length = Self::PREFIX_LEN + 4 + NONCE_PREFIX + 32 + 2 + wrapped_key.len();
        let mut bytes = Vec::with_capacity(length);
        bytes.extend_from_slice(&MAGIC);
        bytes.push(FORMAT_VERSION);
        bytes.extend_from_slice(
            &u16::try_from(length).map_err(|_| CryptoError::Limit("wrapped key too long"))?.to_be_bytes(),
        );
        bytes.extend_from_slice(&chunk_size.to_be_bytes());
        bytes.extend_from_slice(&nonce_prefix);
        bytes.extend_from_slice(key_id.as_bytes());
        bytes.extend_from_slice(recording_id.as_bytes());
        bytes.extend_from_slice(&(wrapped_key.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&wrapped_key);
        Ok(Self { bytes, chunk_size, nonce_prefix, key_id, recording_id, wrapped_key })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The tenant key the data key is wrapped with.
    pub fn key_id(&self) -> Uuid {
        self.key_id
    }

    pub fn recording_id(&self) -> Uuid {
        self.recording_id
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// The recording's data key, unwrapped with the tenant's private key.
    pub fn unwrap_key(&self, tenant_key: &PrivateKey) -> Result<DataKey, CryptoError> {
        tenant_key.unwrap_data_key(&self.wrapped_key, &data_key_label(self.key_id, self.recording_id))
    }
}

/// Encrypts a recording as it is written: what [`FileSealer::push`] and [`FileSealer::finish`] append to
/// `out` goes to disk as it is; nothing plain is handed back. The data key lives only in here.
pub struct FileSealer {
    stream: Stream,
    header: Vec<u8>,
    chunk_size: usize,
    buffer: Zeroizing<Vec<u8>>,
    next: u32,
    plain_len: u64,
}

impl std::fmt::Debug for FileSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSealer").field("sealed_chunks", &self.next).field("plain_len", &self.plain_len).finish()
    }
}

impl FileSealer {
    /// A new file for `recording_id` under the tenant key `key_id`: a fresh data key, wrapped. Returns the
    /// sealer and the header, to be written first.
    pub fn new(tenant_key: &PublicKey, key_id: Uuid, recording_id: Uuid) -> Result<(Self, Vec<u8>), CryptoError> {
        Self::with_chunk_size(tenant_key, key_id, recording_id, CHUNK_SIZE)
    }

    /// As [`FileSealer::new`] with another chunk size (16 B to 1 MiB); tests use small chunks.
    pub fn with_chunk_size(
        tenant_key: &PublicKey,
        key_id: Uuid,
        recording_id: Uuid,
        chunk_size: u32,
    ) -> Result<(Self, Vec<u8>), CryptoError> {
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&chunk_size) {
            return Err(CryptoError::Limit("chunk size out of range"));
        }
        let data_key = DataKey::generate()?;
        let wrapped = tenant_key.wrap_data_key(&data_key, &data_key_label(key_id, recording_id))?;
        let header = FileHeader::build(chunk_size, key_id, recording_id, wrapped)?;
        let sealer = Self {
            stream: stream(&data_key, &header.nonce_prefix),
            header: header.bytes.clone(),
            chunk_size: chunk_size as usize,
            buffer: Zeroizing::new(Vec::with_capacity(chunk_size as usize)),
            next: 0,
            plain_len: 0,
        };
        Ok((sealer, header.bytes))
    }

    /// Takes more plain bytes; appends every chunk that became complete, sealed, to `out`.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.plain_len += data.len() as u64;
        while !data.is_empty() {
            let room = self.chunk_size - self.buffer.len();
            let (now, later) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(now);
            data = later;
            if self.buffer.len() == self.chunk_size {
                // The final chunk always follows (it holds at least the patch length), so a full chunk is
                // never the last one.
                self.seal(false, out)?;
            }
        }
        Ok(())
    }

    fn seal(&mut self, last: bool, out: &mut Vec<u8>) -> Result<usize, CryptoError> {
        if self.next == u32::MAX {
            return Err(CryptoError::Limit("a recording of more than 2^32 chunks"));
        }
        // Sealed in place: the buffer turns into cipher text, or is wiped if sealing fails.
        let mut chunk = std::mem::take(&mut *self.buffer);
        if self.stream.encrypt_in_place(self.next, last, &self.header, &mut chunk).is_err() {
            chunk.iter_mut().for_each(|b| *b = 0);
            return Err(CryptoError::Limit("AES-GCM refused to seal a chunk"));
        }
        self.next += 1;
        out.extend_from_slice(&chunk);
        let sealed_len = chunk.len();
        chunk.clear();
        *self.buffer = chunk;
        Ok(sealed_len)
    }

    /// How many chunks are sealed and handed out so far: what a recovered file holds if the writer dies now.
    pub fn sealed_chunks(&self) -> u32 {
        self.next
    }

    /// Plain bytes taken so far.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    /// Seals the final chunk (the rest of the audio, then `patch`, which readers see over the start of the
    /// audio) and the footer.
    pub fn finish(mut self, patch: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        if patch.len() > MAX_PATCH || patch.len() as u64 > self.plain_len {
            return Err(CryptoError::Limit("a patch longer than 4 KiB or than the recording"));
        }
        self.buffer.extend_from_slice(patch);
        self.buffer.extend_from_slice(&(patch.len() as u32).to_be_bytes());
        let sealed_len = self.seal(true, out)?;
        out.extend_from_slice(&(sealed_len as u32).to_be_bytes());
        Ok(())
    }
}

/// How a stored file ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Written to the end: the file's last 4 bytes (the footer).
    Final { footer: [u8; FOOTER] },
    /// Its writer died: the log says how many full chunks it was stored with.
    Unterminated { chunks: u64 },
}

impl Termination {
    /// The footer of a complete file, from its last bytes.
    pub fn from_tail(tail: &[u8]) -> Result<Self, CryptoError> {
        let footer =
            tail.get(tail.len().saturating_sub(FOOTER)..).filter(|f| f.len() == FOOTER).ok_or(CryptoError::Tampered)?;
        Ok(Self::Final { footer: footer.try_into().expect("4 bytes") })
    }
}

/// A stored file's layout, checked against its length before anything is decrypted.
pub struct FileOpener {
    stream: Stream,
    header: FileHeader,
    full_chunks: u64,
    final_range: Option<Range<u64>>,
}

impl std::fmt::Debug for FileOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileOpener")
            .field("full_chunks", &self.full_chunks)
            .field("final_range", &self.final_range)
            .finish()
    }
}

impl FileOpener {
    /// `object_len` is the stored file's whole length.
    pub fn new(
        header: FileHeader,
        key: &DataKey,
        object_len: u64,
        termination: Termination,
    ) -> Result<Self, CryptoError> {
        let sealed_chunk = u64::from(header.chunk_size) + TAG as u64;
        let body = object_len.checked_sub(header.len() as u64).ok_or(CryptoError::Tampered)?;
        let (full_chunks, final_range) = match termination {
            Termination::Final { footer } => {
                let final_len = u64::from(u32::from_be_bytes(footer));
                let max_final = u64::from(header.chunk_size) + (MAX_PATCH + 4 + TAG) as u64;
                let chunks_len = body.checked_sub(FOOTER as u64 + final_len).ok_or(CryptoError::Tampered)?;
                if final_len < (4 + TAG) as u64 || final_len > max_final || chunks_len % sealed_chunk != 0 {
                    return Err(CryptoError::Tampered);
                }
                let start = header.len() as u64 + chunks_len;
                (chunks_len / sealed_chunk, Some(start..start + final_len))
            }
            Termination::Unterminated { chunks } => {
                if chunks.checked_mul(sealed_chunk) != Some(body) {
                    return Err(CryptoError::Tampered);
                }
                (chunks, None)
            }
        };
        if full_chunks >= u64::from(u32::MAX) {
            return Err(CryptoError::Tampered);
        }
        Ok(Self { stream: stream(key, &header.nonce_prefix), header, full_chunks, final_range })
    }

    /// Where the final chunk is in the stored file (none for an unterminated file).
    pub fn final_chunk_range(&self) -> Option<Range<u64>> {
        self.final_range.clone()
    }

    /// Opens the final chunk (fetched from [`Self::final_chunk_range`]; `None` for an unterminated file) and
    /// gives the plain file's view: its length and how to read any range of it.
    pub fn open(self, final_chunk: Option<&[u8]>) -> Result<PlainFile, CryptoError> {
        let (tail, patch) = match (&self.final_range, final_chunk) {
            (Some(range), Some(sealed)) if sealed.len() as u64 == range.end - range.start => {
                let mut plain = Zeroizing::new(sealed.to_vec());
                self.stream
                    .decrypt_in_place(self.full_chunks as u32, true, &self.header.bytes, &mut *plain)
                    .map_err(|_| CryptoError::Tampered)?;
                let n = plain.len();
                let patch_len = u32::from_be_bytes(plain[n - 4..].try_into().expect("4 bytes")) as usize;
                let tail_len = (n - 4).checked_sub(patch_len).ok_or(CryptoError::Tampered)?;
                if patch_len > MAX_PATCH || tail_len > self.header.chunk_size as usize {
                    return Err(CryptoError::Tampered);
                }
                (Zeroizing::new(plain[..tail_len].to_vec()), plain[tail_len..n - 4].to_vec())
            }
            (None, None) => (Zeroizing::new(Vec::new()), Vec::new()),
            _ => return Err(CryptoError::Tampered),
        };
        let len = self.full_chunks * u64::from(self.header.chunk_size) + tail.len() as u64;
        if patch.len() as u64 > len {
            return Err(CryptoError::Tampered);
        }
        Ok(PlainFile { opener: self, tail, patch, len })
    }
}

/// One piece of a read: chunk `index`, of which `take` bytes from `skip` on are wanted. `sealed` is where the
/// chunk is in the stored file, or `None` when it is the final chunk (already open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRead {
    pub index: u64,
    pub sealed: Option<Range<u64>>,
    pub skip: usize,
    pub take: usize,
}

/// An opened encrypted recording: the plain audio's length, and any range of it, chunk by chunk.
pub struct PlainFile {
    opener: FileOpener,
    tail: Zeroizing<Vec<u8>>,
    patch: Vec<u8>,
    len: u64,
}

impl std::fmt::Debug for PlainFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainFile").field("len", &self.len).finish_non_exhaustive()
    }
}

impl PlainFile {
    /// The plain audio's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn header(&self) -> &FileHeader {
        &self.opener.header
    }

    /// The chunks to read for the plain bytes `range` (clamped to the file), in order.
    pub fn reads(&self, range: Range<u64>) -> Vec<ChunkRead> {
        let chunk = u64::from(self.opener.header.chunk_size);
        let (start, end) = (range.start.min(self.len), range.end.min(self.len));
        if start >= end {
            return Vec::new();
        }
        let sealed_chunk = chunk + TAG as u64;
        let base = self.opener.header.len() as u64;
        (start / chunk..=(end - 1) / chunk)
            .map(|index| {
                let from = start.max(index * chunk);
                let to = end.min((index + 1) * chunk);
                let sealed = (index < self.opener.full_chunks)
                    .then(|| base + index * sealed_chunk..base + (index + 1) * sealed_chunk);
                ChunkRead { index, sealed, skip: (from - index * chunk) as usize, take: (to - from) as usize }
            })
            .collect()
    }

    /// The plain bytes of one piece of a read, from the sealed chunk fetched at `read.sealed` (ignored for
    /// the final chunk). A chunk that does not authenticate gives an error and nothing else.
    pub fn decrypt(&self, read: &ChunkRead, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let chunk = u64::from(self.opener.header.chunk_size);
        let mut plain = if read.index < self.opener.full_chunks {
            if sealed.len() as u64 != chunk + TAG as u64 {
                return Err(CryptoError::Tampered);
            }
            let mut plain = Zeroizing::new(sealed.to_vec());
            self.opener
                .stream
                .decrypt_in_place(read.index as u32, false, &self.opener.header.bytes, &mut *plain)
                .map_err(|_| CryptoError::Tampered)?;
            plain
        } else if read.index == self.opener.full_chunks {
            self.tail.clone()
        } else {
            return Err(CryptoError::Limit("a read beyond the end"));
        };
        let first = read.index * chunk;
        if first < self.patch.len() as u64 {
            let over = (self.patch.len() - first as usize).min(plain.len());
            plain[..over].copy_from_slice(&self.patch[first as usize..first as usize + over]);
        }
        let end = (read.skip + read.take).min(plain.len());
        if read.skip > end {
            return Err(CryptoError::Limit("a read beyond the end"));
        }
        Ok(Zeroizing::new(plain[read.skip..end].to_vec()))
    }

    /// Reads `range` out of a stored file held whole in memory (tests, small files).
    pub fn read_from(&self, stored: &[u8], range: Range<u64>) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let mut out = Zeroizing::new(Vec::new());
        for read in self.reads(range) {
            let sealed = match &read.sealed {
                Some(r) => stored.get(r.start as usize..r.end as usize).ok_or(CryptoError::Tampered)?,
                None => &[],
            };
            out.extend_from_slice(&self.decrypt(&read, sealed)?);
        }
        Ok(out)
    }
}

/// Opens a whole stored file held in memory with the tenant's private key: its plain view.
pub fn open_in_memory(
    stored: &[u8],
    tenant_key: &PrivateKey,
    termination: Option<Termination>,
) -> Result<PlainFile, CryptoError> {
    let header = FileHeader::parse(stored)?;
    let key = header.unwrap_key(tenant_key)?;
    let termination = match termination {
        Some(t) => t,
        None => Termination::from_tail(stored)?,
    };
    let opener = FileOpener::new(header, &key, stored.len() as u64, termination)?;
    let final_chunk = match opener.final_chunk_range() {
        Some(r) => Some(stored.get(r.start as usize..r.end as usize).ok_or(CryptoError::Tampered)?),
        None => None,
    };
    opener.open(final_chunk)
}

/// Decrypts a whole stored file held in memory.
pub fn decrypt_in_memory(
    stored: &[u8],
    tenant_key: &PrivateKey,
    termination: Option<Termination>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let plain = open_in_memory(stored, tenant_key, termination)?;
    plain.read_from(stored, 0..plain.len())
}
