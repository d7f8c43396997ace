//! `proto-fuzz` runs its properties to the end.

use super::*;

#[test]
fn proto_fuzz_runs_its_properties() -> Result<()> {
    let mut run = Running::start("proto-fuzz", &["300"])?;
    let line = run.wait_line("the summary", |l| l.starts_with("300 cases passed"))?;
    ensure!(line.contains("messages by group"), "{line}");
    let status = run.child.wait()?;
    ensure!(status.success(), "proto-fuzz exited with {status}");
    Ok(())
}
