//! Writing to stdout and stderr without panicking when the reader is gone.
//!
//! `std`'s `println!` panics when stdout is a closed pipe (`orch tasks |
//! head -1`): Rust ignores SIGPIPE, so the write fails with EPIPE and the
//! macro turns the error into a panic. Two ways out were weighed:
//!
//! - Reset SIGPIPE to its default at start, as C tools have it. Rejected:
//!   orch also writes to pipes of child processes (git, sandboxed commands)
//!   and to sockets, and a default SIGPIPE would kill a whole `orch run`
//!   (mid-attempt, its children left behind) the moment one of those closed
//!   early, or the moment a reader of orch's own progress went away.
//! - Handle the error where orch writes its own output. Chosen: this module
//!   defines `println!`, `print!`, `eprintln!` and `eprint!` for the whole
//!   binary. Declared in `main.rs` before every other module, they shadow
//!   `std`'s macros everywhere in the crate, so every command — including
//!   code written later by someone who never read this — gets the same
//!   behaviour without a special macro to remember.
//!
//! What happens when stdout cannot be written:
//! - by default (listing commands: `tasks`, `show`, `events`, `add-task`,
//!   …) orch exits at once with status 0 and prints nothing: the reader took
//!   what it wanted, and whatever the command did (adding a task, say) is
//!   already committed to the database. That is what ripgrep and other
//!   well-behaved tools do.
//! - while work is in progress (`orch run`, `orch demo`, after
//!   [`keep_working_if_stdout_closes`]) output is dropped from then on and
//!   the work goes on to its normal end and exit code: an attempt that is
//!   being paid for is not abandoned because a pager was closed.
//!
//! A failing stderr is ignored: there is nowhere left to report it.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by commands that must finish their work even if stdout goes away.
static KEEP_WORKING: AtomicBool = AtomicBool::new(false);
/// Set once stdout failed in keep-working mode: later output is dropped.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// From now on a write error on stdout drops the output instead of ending
/// the process (see the module doc).
pub fn keep_working_if_stdout_closes() {
    KEEP_WORKING.store(true, Ordering::SeqCst);
}

/// Writes `args` (and a newline when `newline`) to stdout; what a closed or
/// failing stdout does is described in the module doc.
pub fn stdout(args: fmt::Arguments<'_>, newline: bool) {
    if STDOUT_GONE.load(Ordering::SeqCst) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let result = out
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        // Without a flush a closed pipe would only be noticed at exit,
        // where std swallows the error, or by the next line.
        .and_then(|()| out.flush());
    if let Err(e) = result {
        drop(out);
        stdout_failed(&e);
    }
}

fn stdout_failed(e: &std::io::Error) {
    if KEEP_WORKING.load(Ordering::SeqCst) {
        STDOUT_GONE.store(true, Ordering::SeqCst);
        return;
    }
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = writeln!(
        std::io::stderr(),
        "error: cannot write to stdout: {e} (is the disk full, or the terminal gone?)"
    );
    std::process::exit(1);
}

/// Writes `args` (and a newline when `newline`) to stderr, ignoring errors.
pub fn stderr(args: fmt::Arguments<'_>, newline: bool) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| {
        if newline {
            err.write_all(b"\n")
        } else {
            Ok(())
        }
    });
}

/// `println!` that never panics (see the module doc).
macro_rules! println {
    () => {
        $crate::output::stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), true)
    };
}

/// `print!` that never panics (see the module doc).
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), false)
    };
}

/// `eprintln!` that never panics (see the module doc).
macro_rules! eprintln {
    () => {
        $crate::output::stderr(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), true)
    };
}

/// `eprint!` that never panics (see the module doc).
#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), false)
    };
}
