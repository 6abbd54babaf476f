//! The admin endpoint of a run (`reload.admin`): `POST /admin/reload` asks
//! the run's reloader to check its plugin files now and answers with its
//! report. It listens on a loopback address only, since it has no
//! authentication.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_wasm::reload::{NoReport, ReloadRequests};

use crate::error::ConfigError;

/// How long an admin request waits for the check (a Python plugin compiles
/// for tens of seconds when it is not cached).
const ADMIN_WAIT: Duration = Duration::from_secs(300);

/// The admin endpoint, served on a thread of its own until dropped.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Listens on `listen` (a loopback `IP:port`) and passes reload
    /// requests to `reloads`.
    pub fn start(listen: &str, reloads: ReloadRequests) -> Result<Self, ConfigError> {
        let addr: SocketAddr = listen.parse().map_err(|_| {
            ConfigError(format!(
                "key `reload.admin`: `{listen}` is not IP:port (e.g. 127.0.0.1:9465)"
            ))
        })?;
        if !addr.ip().is_loopback() {
            return Err(ConfigError(format!(
                "key `reload.admin`: `{listen}` is not a loopback address; the admin endpoint \
                 has no authentication, so it only listens on 127.0.0.1 or [::1]"
            )));
        }
        let server = tiny_http::Server::http(addr).map_err(|e| {
            ConfigError(format!(
                "key `reload.admin`: cannot listen on {listen}: {e}"
            ))
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        tracing::info!(%addr, "admin endpoint: POST http://{addr}/admin/reload");
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let (status, body) = match (request.method(), request.url()) {
                        (tiny_http::Method::Post, "/admin/reload") => {
                            match reloads.reload(ADMIN_WAIT) {
                                Ok((true, text)) => (200, text),
                                Ok((false, text)) => (422, text),
                                Err(NoReport::Stopping) => {
                                    (503, "the pipeline is stopping\n".to_string())
                                }
                                Err(NoReport::TimedOut) => {
                                    (504, "no answer from the reload worker\n".into())
                                }
                            }
                        }
                        (_, "/admin/reload") => (405, "use POST\n".into()),
                        _ => (404, "not found\n".into()),
                    };
                    let response = tiny_http::Response::from_string(body).with_status_code(status);
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| {
                ConfigError(format!("key `reload.admin`: cannot start its thread: {e}"))
            })?;
        Ok(Self {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
