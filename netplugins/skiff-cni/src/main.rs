//! The `skiff-cni` executable: reads the invocation from `CNI_*` variables
//! and the network configuration from stdin, prints the result or the error
//! JSON on stdout, and exits non-zero on error, as the CNI spec asks.

use std::io::{Read, Write};
use std::process::ExitCode;

use skiff_cni::config::requested_version;
use skiff_cni::{parse_invocation, run, FsStores, NetlinkDataplane, PluginError};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let outcome = parse_invocation(|key| std::env::var(key).ok())
        .map_err(PluginError::from)
        .and_then(|invocation| {
            read.map_err(PluginError::Stdin)?;
            run(&invocation, &stdin, &mut NetlinkDataplane, &mut FsStores)
        });
    let (reply, code) = match outcome {
        Ok(Some(result)) => (Some(result), ExitCode::SUCCESS),
        Ok(None) => (None, ExitCode::SUCCESS),
        Err(err) => (
            Some(err.to_json(requested_version(&stdin))),
            ExitCode::FAILURE,
        ),
    };
    if let Some(reply) = reply {
        let mut stdout = std::io::stdout().lock();
        // Nothing useful is left to do if stdout is gone.
        let _ = writeln!(stdout, "{reply}");
        let _ = stdout.flush();
    }
    code
}
