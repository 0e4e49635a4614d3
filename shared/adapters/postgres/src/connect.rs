//! Connecting to Postgres: libpq's TLS modes with native-tls, a CA bundle
//! that replaces the system roots, and a connection task that ends with
//! its client.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

use crate::sqlstate::write_error;
use countries_shared::config::{PostgresConfig, TlsMode};
use countries_shared::failure::{error_chain, ErrorKind, WriteError};

/// Opens a connection with the configured TLS mode.
pub async fn connect(config: &PostgresConfig) -> Result<PgConnection, WriteError> {
    let mut pg = tokio_postgres::Config::new();
    pg.host(&config.host)
        .port(config.port)
        .dbname(&config.database)
        .user(&config.user)
        .application_name("countries-replication")
        .connect_timeout(config.connect_timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if let Some(password) = &config.password {
        pg.password(password.expose());
    }
    let where_ = format!(
        "{}@{}:{}/{}",
        config.user, config.host, config.port, config.database
    );
    let fail = |e: tokio_postgres::Error| {
        let mut err = write_error(&e);
        // Authentication and unknown-database errors carry a SQLSTATE and
        // are classified by it. A TLS handshake refused for a bad
        // certificate or host name is permanent; one the network broke is not.
        if err.sqlstate.is_none() {
            if let Some(kind) = tls_failure(&e) {
                err.kind = kind;
            }
        }
        err.message = format!("connecting to {where_}: {}", error_chain(&e));
        err
    };
    let (client, task) = match config.tls {
        TlsMode::Disable => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
            let (client, connection) = pg.connect(NoTls).await.map_err(fail)?;
            (client, tokio::spawn(drive(connection)))
        }
        mode => {
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tls_connector(mode, config)?;
            let (client, connection) = pg.connect(tls).await.map_err(fail)?;
            (client, tokio::spawn(drive(connection)))
        }
    };
    Ok(PgConnection { client, task })
}

async fn drive<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio_postgres::tls::TlsStream + Unpin,
{
    if let Err(e) = connection.await {
        tracing::warn!(error = %e, "Postgres connection ended with an error");
    }
}

fn tls_connector(
    mode: TlsMode,
    config: &PostgresConfig,
) -> Result<postgres_native_tls::MakeTlsConnector, WriteError> {
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = &config.ca_bundle {
        let pem = std::fs::read(path).map_err(|e| {
            WriteError::fatal(format!("reading PGSSLROOTCERT {}: {e}", path.display()))
        })?;
        let certs = pem_certificates(&pem)
            .map_err(|e| WriteError::fatal(format!("PGSSLROOTCERT {}: {e}", path.display())))?;
        // Like libpq's sslrootcert: trust exactly the given CAs.
        builder.disable_built_in_roots(true);
        for cert in certs {
            builder.add_root_certificate(cert);
        }
    }
    match mode {
        TlsMode::Require => {
            builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        TlsMode::VerifyCa => {
            builder.danger_accept_invalid_hostnames(true);
        }
        TlsMode::VerifyFull | TlsMode::Disable => {}
    }
    let connector = builder
        .build()
        .map_err(|e| WriteError::fatal(format!("building the TLS connector: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// Splits a PEM bundle (the RDS bundle holds dozens of CAs) into certificates.
fn pem_certificates(pem: &[u8]) -> Result<Vec<native_tls::Certificate>, String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_string())?;
    let mut certs = Vec::new();
    for block in text.split_inclusive(END).filter(|b| b.contains(END)) {
        let cert = native_tls::Certificate::from_pem(block.trim().as_bytes())
            .map_err(|e| format!("certificate {} unreadable: {e}", certs.len() + 1))?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

/// OpenSSL's library code for SSL, and its reason for a peer that closed
/// the connection in the middle of the handshake (OpenSSL 3, ssl.h).
const ERR_LIB_SSL: i32 = 20;
const SSL_R_UNEXPECTED_EOF_WHILE_READING: i32 = 294;

/// How a failed TLS connection is classified, by the error types in its
/// chain rather than their wording:
/// - the transport broke (an I/O error, or the peer closed the connection
///   during the handshake): transient, a later attempt may work;
/// - the handshake was refused (the certificate chain, the host name, the
///   protocol): fatal, retrying cannot help;
/// - no TLS error in the chain: None, the caller's classification stands.
fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut tls = false;
    let mut refused = false;
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if is_transient_io(io.kind()) {
                return Some(ErrorKind::Transient);
            }
        }
        if e.downcast_ref::<native_tls::Error>().is_some() {
            tls = true;
        }
        if let Some(stack) = e.downcast_ref::<openssl::error::ErrorStack>() {
            let eof = stack.errors().iter().any(|e| {
                e.library_code() == ERR_LIB_SSL
                    && e.reason_code() == SSL_R_UNEXPECTED_EOF_WHILE_READING
            });
            if eof {
                return Some(ErrorKind::Transient);
            }
            refused |= !stack.errors().is_empty();
        }
        current = e.source();
    }
    match (tls, refused) {
        (false, _) => None,
        (true, true) => Some(ErrorKind::Fatal),
        // A TLS error with no detail: the connection ended without an
        // answer (a syscall error at end of file).
        (true, false) => Some(ErrorKind::Transient),
    }
}

fn is_transient_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionReset
            | ConnectionAborted
            | ConnectionRefused
            | BrokenPipe
            | UnexpectedEof
            | TimedOut
            | Interrupted
            | NotConnected
    )
}

/// A client whose connection task ends with it.
pub struct PgConnection {
    pub client: Client,
    task: JoinHandle<()>,
}

impl Drop for PgConnection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_is_split_and_junk_is_refused() {
        assert!(pem_certificates(b"not a certificate").is_err());
        assert!(pem_certificates(&[0xff, 0xfe]).is_err());
    }
}
