//! The number formats a model can run in, and which of them this CPU runs well.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Numeric format of a model's weights and activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float: the reference, runs everywhere.
    #[default]
    F32,
    /// 16-bit float on CPUs with FP16 arithmetic (Cortex-A55/A76/A78: Pi 5,
    /// Jetson Orin); elsewhere f32 runs instead.
    F16,
    /// 8-bit integers with the ranges of an `edgedet quantize` calibration.
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::F16, Precision::Int8];

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Int8 => "int8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Precision {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Precision::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .ok_or_else(|| format!("invalid precision {text:?}: expected f32, f16 or int8"))
    }
}

/// The `precision` setting: one precision, or `auto`, which times the
/// precisions this CPU and model offer at first start and keeps the fastest
/// that agrees with f32 ([`crate::model::auto`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum PrecisionSetting {
    Fixed(Precision),
    Auto,
}

impl Default for PrecisionSetting {
    fn default() -> Self {
        PrecisionSetting::Fixed(Precision::F32)
    }
}

impl From<Precision> for PrecisionSetting {
    fn from(precision: Precision) -> Self {
        PrecisionSetting::Fixed(precision)
    }
}

impl fmt::Display for PrecisionSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrecisionSetting::Fixed(precision) => precision.fmt(f),
            PrecisionSetting::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for PrecisionSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "auto" {
            return Ok(PrecisionSetting::Auto);
        }
        text.parse()
            .map(PrecisionSetting::Fixed)
            .map_err(|_| format!("invalid precision {text:?}: expected f32, f16, int8 or auto"))
    }
}

impl TryFrom<String> for PrecisionSetting {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<PrecisionSetting> for String {
    fn from(setting: PrecisionSetting) -> String {
        setting.to_string()
    }
}

/// Checks whether tract has half-precision matrix kernels for this CPU.
///
/// tract decides from `/proc/cpuinfo` (the `asimdhp` flag) or from the CPU
/// kind set in `TRACT_CPU_AARCH64_KIND`. Only aarch64 has such kernels: on
/// x86 an f16 model would run tract's portable f16 code, many times slower
/// than f32.
pub fn cpu_has_fp16() -> bool {
    #[cfg(target_arch = "aarch64")]
    {
        tract_linalg::has_fp16()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        false
    }
}
