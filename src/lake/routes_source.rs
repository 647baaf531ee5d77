//! Where the routes TOML comes from. A Lambda's environment variables share 4 KB in all
//! (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html>), so many
//! routes do not fit in `LOADER_CONFIG`: they can live in an SSM parameter
//! (`LOADER_CONFIG_SSM`, up to 4 KB standard / 8 KB advanced) or an S3 object
//! (`LOADER_CONFIG_S3`, any size). Either is read once, when the container starts.

use aws_config::SdkConfig;

use crate::error::LoaderError;
use crate::lake::config::{Config, S3Location};

/// The four variables that can carry the routes; exactly one may be set.
pub const VARIABLES: [&str; 4] = [
    "LOADER_CONFIG",
    "LOADER_CONFIG_FILE",
    "LOADER_CONFIG_SSM",
    "LOADER_CONFIG_S3",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutesSource {
    /// `LOADER_CONFIG` or `LOADER_CONFIG_FILE`: [`Config::from_lookup`] reads them.
    Local,
    /// An SSM parameter name (a String or SecureString parameter).
    Ssm(String),
    /// `s3://bucket/key` of a TOML object.
    S3 { bucket: String, key: String },
}

/// Which source the environment names (pure).
pub fn source(lookup: &impl Fn(&str) -> Option<String>) -> Result<RoutesSource, LoaderError> {
    let set: Vec<&str> = VARIABLES
        .iter()
        .copied()
        .filter(|v| lookup(v).is_some())
        .collect();
    if set.len() > 1 {
        return Err(LoaderError::Config(format!(
            "{}: set exactly one of {} (found {})",
            set[0],
            VARIABLES.join(", "),
            set.join(" and ")
        )));
    }
    if let Some(name) = lookup("LOADER_CONFIG_SSM") {
        return Ok(RoutesSource::Ssm(name));
    }
    if let Some(url) = lookup("LOADER_CONFIG_S3") {
        let bad = |why: &str| LoaderError::Config(format!("LOADER_CONFIG_S3: {why}"));
        let location = S3Location::parse(&url).map_err(|e| bad(&e))?;
        // S3Location keeps a prefix with a trailing `/`: take the key from the URL.
        let key = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, key)| key.to_string())
            .unwrap_or_default();
        if key.is_empty() || key.ends_with('/') {
            return Err(bad(&format!(
                "{url:?} must name an object (s3://bucket/key)"
            )));
        }
        return Ok(RoutesSource::S3 {
            bucket: location.bucket,
            key,
        });
    }
    Ok(RoutesSource::Local)
}

/// The configuration from the environment, with the routes fetched from SSM or S3 when
/// the environment says so. Call once per container.
pub async fn config_from_env(sdk: &SdkConfig) -> Result<Config, LoaderError> {
    config_from_lookup(sdk, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    })
    .await
}

/// [`config_from_env`] with the variables from `lookup` (tests pass a map).
pub async fn config_from_lookup(
    sdk: &SdkConfig,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, LoaderError> {
    let text = match source(&lookup)? {
        RoutesSource::Local => return Config::from_lookup(lookup),
        RoutesSource::Ssm(name) => fetch_ssm(sdk, &name).await?,
        RoutesSource::S3 { bucket, key } => fetch_s3(sdk, &bucket, &key).await?,
    };
    Config::from_lookup(|name| match name {
        "LOADER_CONFIG" => Some(text.clone()),
        "LOADER_CONFIG_FILE" => None,
        other => lookup(other),
    })
}

async fn fetch_ssm(sdk: &SdkConfig, name: &str) -> Result<String, LoaderError> {
    let out = aws_sdk_ssm::Client::new(sdk)
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| {
            LoaderError::Config(format!(
                "LOADER_CONFIG_SSM: cannot read parameter {name:?}: {} (does it exist in this \
                 Region, and may the function's role call ssm:GetParameter on it?)",
                aws_sdk_ssm::error::DisplayErrorContext(&e)
            ))
        })?;
    out.parameter
        .and_then(|p| p.value)
        .ok_or_else(|| LoaderError::Config(format!("LOADER_CONFIG_SSM: {name:?} has no value")))
}

async fn fetch_s3(sdk: &SdkConfig, bucket: &str, key: &str) -> Result<String, LoaderError> {
    let mut conf = aws_sdk_s3::config::Builder::from(sdk);
    if std::env::var_os("AWS_ENDPOINT_URL_S3").is_some() {
        conf = conf.force_path_style(true);
    }
    let url = format!("s3://{bucket}/{key}");
    let cannot = |why: String| {
        LoaderError::Config(format!(
            "LOADER_CONFIG_S3: cannot read {url}: {why} (does it exist, and may the function's \
             role call s3:GetObject on it?)"
        ))
    };
    let out = aws_sdk_s3::Client::from_conf(conf.build())
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| cannot(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
    let bytes = out
        .body
        .collect()
        .await
        .map_err(|e| cannot(e.to_string()))?
        .into_bytes();
    String::from_utf8(bytes.to_vec()).map_err(|_| cannot("not UTF-8 text".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn one_source_at_most() {
        assert_eq!(source(&lookup(&[])).ok(), Some(RoutesSource::Local));
        assert_eq!(
            source(&lookup(&[("LOADER_CONFIG", "x")])).ok(),
            Some(RoutesSource::Local)
        );
        assert_eq!(
            source(&lookup(&[("LOADER_CONFIG_SSM", "/pl/routes")])).ok(),
            Some(RoutesSource::Ssm("/pl/routes".into()))
        );
        assert_eq!(
            source(&lookup(&[(
                "LOADER_CONFIG_S3",
                "s3://cfg/loader/routes.toml"
            )]))
            .ok(),
            Some(RoutesSource::S3 {
                bucket: "cfg".into(),
                key: "loader/routes.toml".into()
            })
        );
        let both = source(&lookup(&[
            ("LOADER_CONFIG", "x"),
            ("LOADER_CONFIG_SSM", "/p"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            both.contains("LOADER_CONFIG and LOADER_CONFIG_SSM"),
            "{both}"
        );
    }

    #[test]
    fn s3_source_must_name_an_object() {
        for url in ["s3://cfg", "s3://cfg/", "s3://cfg/dir/", "https://cfg/x"] {
            let vars: &'static [(&str, &str)] = Box::leak(Box::new([("LOADER_CONFIG_S3", url)]));
            let err = source(&lookup(vars)).unwrap_err().to_string();
            assert!(
                err.starts_with("configuration: LOADER_CONFIG_S3"),
                "{url}: {err}"
            );
        }
    }
}
