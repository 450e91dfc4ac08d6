//! The machine's ceilings, so broker figures can be read against what the hardware allows: one
//! TCP stream over loopback (what a single client connection could ever carry) and sequential
//! O_DIRECT writes (what the data disk takes without the page cache flattering it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::result::CeilingResult;

/// O_DIRECT needs buffer, offset and length aligned to the device's logical block; 4096 covers
/// every block size in use (512 and 4096), so one constant serves all disks.
const DIRECT_IO_ALIGN: usize = 4096;

/// Stops the disk measurement on a fast disk before it fills a small one.
const WRITE_BYTES_MAX: u64 = 8 << 30;

/// Past this a single write outlasts a short `--seconds`, so the measured window stops meaning
/// what was asked for.
const BLOCK_BYTES_MAX: u32 = 64 << 20;

pub fn main(args: crate::CeilingArgs) -> Result<(), BenchError> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(BenchError::Usage(format!(
            "--seconds must be positive, got {}",
            args.seconds
        )));
    }
    let duration = Duration::from_secs_f64(args.seconds);
    let block = block_len(args.block_bytes)?;
    std::fs::create_dir_all(&args.dir)
        .map_err(BenchError::io(format!("creating {}", args.dir.display())))?;

    let tcp = loopback_tcp_mb_per_s(duration, block)?;
    let disk = odirect_write_mb_per_s(&args.dir, duration, block)?;

    let result = CeilingResult {
        kind: "ceiling".to_string(),
        machine: crate::machine::machine(),
        loopback_tcp_mb_per_s: tcp,
        odirect_write_mb_per_s: disk,
        data_dir: args.dir.display().to_string(),
        block_bytes: args.block_bytes,
        seconds: args.seconds,
    };
    crate::write_json(&args.out, &result)?;
    eprintln!(
        "ceiling: loopback TCP {tcp:.1} MB/s, O_DIRECT write {disk:.1} MB/s into {} ({} KiB blocks, {} s each)",
        args.dir.display(),
        args.block_bytes / 1024,
        args.seconds
    );
    Ok(())
}

fn block_len(block_bytes: u32) -> Result<usize, BenchError> {
    if block_bytes == 0
        || block_bytes > BLOCK_BYTES_MAX
        || !(block_bytes as usize).is_multiple_of(DIRECT_IO_ALIGN)
    {
        return Err(BenchError::Usage(format!(
            "--block-bytes must be a multiple of {DIRECT_IO_ALIGN} (O_DIRECT alignment) \
             between {DIRECT_IO_ALIGN} and {BLOCK_BYTES_MAX}, got {block_bytes}"
        )));
    }
    Ok(block_bytes as usize)
}

/// One sender thread and one receiver (this thread) over 127.0.0.1; MB/s as received.
fn loopback_tcp_mb_per_s(duration: Duration, block: usize) -> Result<f64, BenchError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(BenchError::io("binding a loopback listener"))?;
    let addr = listener
        .local_addr()
        .map_err(BenchError::io("reading the loopback listener's address"))?;
    // Connecting before accepting cannot block: the kernel completes the handshake into the
    // listen backlog, so no thread can be left waiting on a peer that never came.
    let mut sender =
        TcpStream::connect(addr).map_err(BenchError::io(format!("connecting to {addr}")))?;
    let (mut receiver, _) = listener
        .accept()
        .map_err(BenchError::io("accepting the loopback connection"))?;

    let payload = random_bytes(block);
    let start = Instant::now();
    let send = std::thread::spawn(move || -> Result<(), BenchError> {
        while start.elapsed() < duration {
            sender
                .write_all(&payload)
                .map_err(BenchError::io("sending over loopback"))?;
        }
        // Dropping `sender` closes the connection, which is how the receiver learns to stop.
        Ok(())
    });

    let mut buf = vec![0u8; block];
    let mut received: u64 = 0;
    loop {
        match receiver.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BenchError::io("receiving over loopback")(e)),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    send.join().map_err(|_| {
        BenchError::io("loopback sender thread")(std::io::Error::other("panicked"))
    })??;
    Ok(received as f64 / elapsed / 1e6)
}

/// Removes the scratch file however the measurement ends, so a failed run does not leave
/// gigabytes behind on the brokers' disk.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sequential `block`-sized O_DIRECT writes for `duration` (or `WRITE_BYTES_MAX`), then one
/// fdatasync, all inside the timed window; MB/s as written.
fn odirect_write_mb_per_s(dir: &Path, duration: Duration, block: usize) -> Result<f64, BenchError> {
    let path = dir.join(format!(".spool-bench-ceiling-{}.tmp", std::process::id()));
    let unsupported = || {
        BenchError::Usage(format!(
            "the file system of {} refuses O_DIRECT (tmpfs or similar?); point --dir at the \
             disk the brokers write to",
            dir.display()
        ))
    };
    let mut file = match OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(unsupported()),
        Err(e) => return Err(BenchError::io(format!("creating {}", path.display()))(e)),
    };
    let _scratch = Scratch(path.clone());

    // The workspace denies `unsafe`, so no aligned allocator: over-allocate and start the block
    // at the first aligned address inside the Vec, which never moves once filled.
    let backing = random_bytes(block + DIRECT_IO_ALIGN);
    let skew = backing.as_ptr() as usize % DIRECT_IO_ALIGN;
    let offset = if skew == 0 { 0 } else { DIRECT_IO_ALIGN - skew };
    let aligned = &backing[offset..offset + block];

    let start = Instant::now();
    let mut written: u64 = 0;
    while start.elapsed() < duration && written + block as u64 <= WRITE_BYTES_MAX {
        write_block(&mut file, aligned, written, &path).map_err(|e| match e {
            WriteFailure::Unsupported => unsupported(),
            WriteFailure::Other(e) => e,
        })?;
        written += block as u64;
    }
    file.sync_data()
        .map_err(BenchError::io(format!("fdatasync of {}", path.display())))?;
    let elapsed = start.elapsed().as_secs_f64();
    drop(file);
    Ok(written as f64 / elapsed / 1e6)
}

enum WriteFailure {
    Unsupported,
    Other(BenchError),
}

fn write_block(file: &mut File, block: &[u8], at: u64, path: &Path) -> Result<(), WriteFailure> {
    let outcome = loop {
        match file.write(block) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    match outcome {
        Ok(n) if n == block.len() => Ok(()),
        // A short O_DIRECT write leaves the file offset unaligned, so the next write would fail
        // anyway; a short write only happens when the disk is (nearly) full.
        Ok(n) => Err(WriteFailure::Other(BenchError::Usage(format!(
            "short write ({n} of {} bytes) at offset {at} of {}: is the disk full?",
            block.len(),
            path.display()
        )))),
        // Some file systems accept O_DIRECT at open and refuse it on the first write.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) && at == 0 => {
            Err(WriteFailure::Unsupported)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
            Err(WriteFailure::Other(BenchError::Usage(format!(
                "disk full after {at} bytes into {}: free some space or lower --seconds",
                path.display()
            ))))
        }
        Err(e) => Err(WriteFailure::Other(BenchError::io(format!(
            "writing {} at offset {at}",
            path.display()
        ))(e))),
    }
}

/// Incompressible bytes: some virtual disks and file systems compress or skip zero blocks,
/// which would overstate the disk.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::new();
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_both_ceilings_and_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = dir.path().join("ceiling.json");
        main(crate::CeilingArgs {
            dir: data.clone(),
            seconds: 0.3,
            block_bytes: 256 * 1024,
            out: out.clone(),
        })
        .expect("ceiling run (needs a file system with O_DIRECT under the temp dir)");

        let text = std::fs::read_to_string(&out).expect("result written");
        let result: CeilingResult = serde_json::from_str(&text).expect("result parses");
        assert_eq!(result.kind, "ceiling");
        assert!(result.loopback_tcp_mb_per_s > 0.0);
        assert!(result.odirect_write_mb_per_s > 0.0);
        assert_eq!(result.block_bytes, 256 * 1024);
        let left: Vec<_> = std::fs::read_dir(&data).expect("data dir").collect();
        assert!(left.is_empty(), "scratch file left behind: {left:?}");
    }

    #[test]
    fn rejects_unaligned_blocks() {
        assert!(block_len(4096).is_ok());
        assert!(block_len(0).is_err());
        assert!(block_len(1000).is_err());
        assert!(block_len(BLOCK_BYTES_MAX + 4096).is_err());
    }
}
