//! The single exit for unrecoverable environment failures (a data directory that vanished, an
//! executor that cannot start). A half-alive thread-per-core process is worse than a dead one, so
//! this logs and exits; it never unwinds.

pub fn fatal(reason: impl std::fmt::Display) -> ! {
    tracing::error!("fatal: {reason}");
    eprintln!("spool: fatal: {reason}");
    std::process::exit(70)
}
