//! The AWS SDK configuration every client of the Lambda and loaderctl is built from,
//! with its HTTPS client: the SDK's own default client, on rustls with ring instead of
//! aws-lc-rs (the AWS crates are built without a client of their own, see Cargo.toml).
//! Everything else is the SDK's: timeouts, the `AWS_*` environment with endpoint
//! overrides, the credential chain, and `HTTPS_PROXY`/`NO_PROXY` as the default client
//! reads them for the latest behavior version.

use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

/// `aws_config::load_defaults(BehaviorVersion::latest())` with the HTTPS client that
/// aws-smithy-runtime's `default_https_client` builds for the latest behavior version,
/// `CryptoMode::Ring` where it has `AwsLc`. The trade: rustls on ring offers no
/// post-quantum key exchange (aws-lc-rs prefers X25519MLKEM768), so TLS to the AWS
/// endpoints is classical X25519/P-256 ECDHE.
pub async fn load_config() -> SdkConfig {
    let https = Builder::new().build_with_connector_fn(|settings, runtime_components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = runtime_components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https)
        .load()
        .await
}
