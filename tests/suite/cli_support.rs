//! Shared pieces of the command-line tests (`align_cli`, `llfc_report_cli`, `lap_cli`): the
//! example binaries, a run with its exit status, and snapshots of a directory (names, bytes,
//! modification times) to prove that nothing a failed run could touch was touched.
#![cfg(feature = "io")]
#![allow(dead_code)] // each CLI test module uses a subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// An example binary built by `cargo test` next to this test's own executable.
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "build the example first: {}", bin.display());
    bin
}

/// What a run returned: exit code, stdout, stderr.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Run example `name` with `args`.
pub fn run_example(name: &str, args: &[&str]) -> Run {
    let out = Command::new(example_bin(name)).args(args).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

impl Run {
    /// Exit status 1 and exactly one line on stderr, of reasonable length, containing `needle`.
    pub fn assert_fails_with(&self, needle: &str, what: &str) {
        assert_eq!(self.code, Some(1), "{what}: {}", self.stderr);
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "{what}: not one line: {}",
            self.stderr
        );
        assert!(
            self.stderr.len() < 2200,
            "{what}: {} bytes of stderr",
            self.stderr.len()
        );
        assert!(
            self.stderr.contains(needle),
            "{what}: expected `{needle}` in: {}",
            self.stderr
        );
    }
}

/// Every entry of a directory tree (following no links): name → (bytes, mtime) for files,
/// the link target for symbolic links, nothing for directories.
#[derive(Debug, PartialEq)]
pub struct Snapshot(BTreeMap<PathBuf, (Vec<u8>, Option<SystemTime>)>);

impl Snapshot {
    pub fn of(dir: &Path) -> Self {
        let mut map = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let content = if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    (target.to_string_lossy().as_bytes().to_vec(), None)
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    (Vec::new(), None)
                } else if meta.is_file() {
                    (
                        std::fs::read(&path).unwrap(),
                        Some(meta.modified().unwrap()),
                    )
                } else {
                    (Vec::new(), None) // a FIFO: never opened here
                };
                map.insert(path, content);
            }
        }
        Self(map)
    }
}

/// Run example `name` with each failing argument list: each must fail with one line containing
/// its needle, and leave the directory exactly as it was (no file changed in bytes or
/// modification time, none added or removed: no output, no temporary file).
pub fn assert_failures_touch_nothing(name: &str, dir: &Path, cases: &[(Vec<String>, &str)]) {
    for (args, needle) in cases {
        let before = Snapshot::of(dir);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_example(name, &args);
        run.assert_fails_with(needle, &format!("{name} {args:?}"));
        assert!(
            Snapshot::of(dir) == before,
            "{name} {args:?} changed the directory"
        );
    }
}

/// Run example `name` with `args`: it must succeed and change the directory (its output).
pub fn assert_succeeds_and_writes(name: &str, dir: &Path, args: &[String]) {
    let before = Snapshot::of(dir);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_example(name, &args);
    assert_eq!(run.code, Some(0), "{name} {args:?}: {}", run.stderr);
    assert!(Snapshot::of(dir) != before, "{name} {args:?} wrote nothing");
}

/// Files in a test directory that a careless tool would read or overwrite: a symbolic link to
/// one input, a hard link to another, a directory, and an `.npz` link to `/dev/zero`.
pub struct Traps {
    pub link: PathBuf,
    pub hard: PathBuf,
    pub outdir: PathBuf,
    pub zero: PathBuf,
}

impl Traps {
    /// `link` = `(target, name)` of the symbolic link, `hard` = `(target, name)` of the hard
    /// link, `outdir` the directory's name; the `/dev/zero` link is `zero.npz`.
    pub fn new(dir: &Path, link: (&Path, &str), hard: (&Path, &str), outdir: &str) -> Self {
        let traps = Self {
            link: dir.join(link.1),
            hard: dir.join(hard.1),
            outdir: dir.join(outdir),
            zero: dir.join("zero.npz"),
        };
        std::os::unix::fs::symlink(link.0, &traps.link).unwrap();
        std::fs::hard_link(hard.0, &traps.hard).unwrap();
        std::fs::create_dir(&traps.outdir).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &traps.zero).unwrap();
        traps
    }
}

/// `Vec<String>` from string slices.
pub fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_string()).collect()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
