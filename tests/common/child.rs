//! Child processes made of this test binary: a child is an `#[ignore]`d test, so the plain run
//! skips it, and its parent starts it by exact name with the environment it needs. Run by hand
//! without that environment, a child fails rather than passing with nothing checked.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Names the child test a process was started to run.
const VAR: &str = "SLICETRACE_TEST_CHILD";

/// A command that runs the ignored test `name` of this binary, alone, output not captured.
pub fn command(name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(VAR, name);
    cmd
}

/// Called first by child test `name`: panics unless its parent started it.
pub fn expect_started_as(name: &str) {
    assert_eq!(
        std::env::var(VAR).as_deref(),
        Ok(name),
        "{name} is a child process of another test, which gives it its environment; \
         run that test instead"
    );
}

/// Asserts that `out` is a run of exactly one test that passed (a name that matches nothing
/// runs no test and still succeeds), and returns its standard output.
pub fn passed(out: Output) -> String {
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert_ran_one(&stdout);
    stdout
}

/// Asserts that a child's standard output reports one test run and passed.
pub fn assert_ran_one(stdout: &str) {
    assert!(
        stdout.contains("running 1 test"),
        "the child ran no test: {stdout}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child's test did not pass: {stdout}"
    );
}
