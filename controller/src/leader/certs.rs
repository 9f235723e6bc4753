//! Certificate expiry on the leader: each planner tick, the control
//! planes' latest reports (liveness observations) are compared with the
//! pools ([`crate::policy::certs::report_commands`]) and any change or due
//! alert is proposed as `Command::ReportCerts`. Only that command is
//! replicated; after a leader change the new leader compares afresh and
//! proposes nothing the record already holds.

use rpool_proto::clock::unix_ms_now;
use tracing::debug;

use crate::Shared;
use crate::replica::ProposeError;

/// Runs one certificate tick on the leader (called by the planner loop).
pub(crate) async fn tick(shared: &Shared) {
    let commands = {
        let live = shared.liveness.lock().unwrap_or_else(|e| e.into_inner());
        shared.node.read(|sm| {
            crate::policy::certs::report_commands(
                sm,
                |host_id| live.observation(host_id).and_then(|o| o.certs.as_ref()),
                unix_ms_now(),
            )
        })
    };
    for command in commands {
        match shared.node.propose(command).await {
            Ok(_) => {}
            Err(ProposeError::Rejected(e)) => debug!(error = %e, "certificate report refused"),
            Err(e) => {
                debug!(error = %e, "certificate report not committed");
                break;
            }
        }
    }
}
