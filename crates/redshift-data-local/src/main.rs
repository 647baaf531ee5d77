use clap::Parser;
use redshift_data_local::{serve, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Config::parse();
    let server = match serve(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("redshift-data-local: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        result = server.wait() => {
            if let Err(e) = result {
                eprintln!("redshift-data-local: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted, stopping"),
    }
    std::process::ExitCode::SUCCESS
}
