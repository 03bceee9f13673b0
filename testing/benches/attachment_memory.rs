//! Peak memory and time of sending and receiving a 100 MB encrypted
//! attachment through a real Synapse (started by `cargo xtask bench
//! attachments`).
//!
//! The file is read from disk and encrypted, hashed and uploaded as a
//! stream (`Room::send_attachment` with `AttachmentData::File`), then
//! downloaded, hash-checked and decrypted into a file
//! (`Client::download_to`). For scale, the same download into memory
//! (`Client::download`) is measured too. Linux only: it reads and resets
//! the peak RSS (`VmHWM`) through /proc.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use hush_client::{AttachmentData, Client, MessagesOptions, SyncSettings};
use hush_testing::memory::{reset_peak_rss, status_kib};
use hush_testing::synapse::{homeserver_url, register, unique_name};

const SIZE: usize = 100 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

fn write_file(path: &std::path::Path) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut block = vec![0u8; 1024 * 1024];
    for n in 0..SIZE / block.len() {
        for (i, byte) in block.iter_mut().enumerate() {
            *byte = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(n as u32).to_le_bytes()[3];
        }
        file.write_all(&block).expect("write");
    }
    file.flush().expect("flush");
}

fn same_files(a: &std::path::Path, b: &std::path::Path) -> bool {
    let (mut a, mut b) = (std::fs::File::open(a).expect("a"), std::fs::File::open(b).expect("b"));
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).expect("read a");
        let mut filled = 0;
        while filled < n {
            let m = b.read(&mut y[filled..n]).expect("read b");
            if m == 0 {
                return false;
            }
            filled += m;
        }
        if n == 0 {
            return b.read(&mut y).expect("read b") == 0;
        }
        if x[..n] != y[..n] {
            return false;
        }
    }
}

/// Runs `work`, returning its time and how far the peak RSS rose above the RSS before it.
async fn measure<T>(work: impl Future<Output = T>) -> (T, Duration, f64) {
    reset_peak_rss();
    let before = status_kib("VmRSS");
    let start = Instant::now();
    let out = work.await;
    let elapsed = start.elapsed();
    let peak = status_kib("VmHWM");
    (out, elapsed, peak.saturating_sub(before) as f64 / 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let input = dir.path().join("input.bin");
    write_file(&input);
    let name = unique_name("bench");
    register(&name, "password").await.expect("register");
    let client = Client::builder().homeserver_url(homeserver_url()).build().expect("client");
    client.matrix_auth().login_username(&name, "password").send().await.expect("login");
    let room_id = client.create_room("attachments", true, &[]).await.expect("room");
    client.sync_once(SyncSettings::default().timeout(Duration::ZERO)).await.expect("sync");
    let room = client.get_room(&room_id).expect("room known");

    let data = AttachmentData::File(input.clone());
    let (sent, upload_time, upload_peak) =
        measure(room.send_attachment("input.bin", "application/octet-stream", data)).await;
    sent.expect("send the attachment");

    let page = room.messages(MessagesOptions::backward().limit(5)).await.expect("history");
    let file = page.chunk.iter().find_map(|e| e.encrypted_file()).expect("the file event");
    let output = dir.path().join("output.bin");
    let writer = std::fs::File::create(&output).expect("output");
    let (written, download_time, download_peak) = measure(client.download_to(&file, writer)).await;
    written.expect("download");
    assert!(same_files(&input, &output), "the download differs from the upload");
    let (in_memory, memory_time, memory_peak) = measure(client.download(&file)).await;
    assert_eq!(in_memory.expect("download into memory").len(), SIZE);

    let mib = SIZE as f64 / MIB;
    println!("attachment of {mib:.0} MiB, encrypted, through Synapse on loopback");
    println!("| step | time | MiB/s | peak RSS above the start |");
    println!("|---|---|---|---|");
    for (step, time, peak) in [
        ("send_attachment (file → encrypt → upload, streamed)", upload_time, upload_peak),
        ("download_to (download → hash check → decrypt → file)", download_time, download_peak),
        ("download (into memory, for scale)", memory_time, memory_peak),
    ] {
        println!("| {step} | {:.2} s | {:.0} | {peak:.1} MiB |", time.as_secs_f64(), mib / time.as_secs_f64());
    }
}
