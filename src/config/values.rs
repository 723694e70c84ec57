//! Value types that check themselves while the TOML is read.
//!
//! Each type rejects its invalid values in `TryFrom`, which serde calls while
//! the value is deserialized, so toml attaches the value's position to the
//! error. Rules that involve several keys live in [`super::Config::from_file`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A TCP port from 1 to 65535.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct Port(u16);

impl Port {
    pub const fn new(port: u16) -> Option<Port> {
        if port == 0 {
            None
        } else {
            Some(Port(port))
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl TryFrom<u16> for Port {
    type Error = String;

    fn try_from(port: u16) -> Result<Self, Self::Error> {
        Port::new(port).ok_or_else(|| "invalid port 0: expected 1 to 65535".to_string())
    }
}

impl From<Port> for u16 {
    fn from(port: Port) -> u16 {
        port.0
    }
}

/// A finite number from 0 to 1 inclusive, such as a score or overlap threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct UnitInterval(f32);

impl UnitInterval {
    pub fn get(self) -> f32 {
        self.0
    }
}

impl TryFrom<f64> for UnitInterval {
    type Error = String;

    fn try_from(value: f64) -> Result<Self, Self::Error> {
        if (0.0..=1.0).contains(&value) {
            Ok(UnitInterval(value as f32))
        } else {
            Err(format!("invalid value {value}: expected a number from 0 to 1"))
        }
    }
}

impl From<UnitInterval> for f64 {
    fn from(value: UnitInterval) -> f64 {
        f64::from(value.0)
    }
}

/// A frame rate in frames per second: finite and above 0.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct FrameRate(f64);

impl FrameRate {
    pub fn get(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for FrameRate {
    type Error = String;

    fn try_from(fps: f64) -> Result<Self, Self::Error> {
        // 1e-3 fps is one frame every 17 minutes; below that a Duration
        // computed from the rate stops being meaningful.
        if fps.is_finite() && fps >= 1e-3 {
            Ok(FrameRate(fps))
        } else {
            Err(format!("invalid frame rate {fps}: expected a number of frames per second of at least 0.001"))
        }
    }
}

impl From<FrameRate> for f64 {
    fn from(fps: FrameRate) -> f64 {
        fps.0
    }
}

/// MQTT quality of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
    ExactlyOnce,
}

impl TryFrom<u8> for Qos {
    type Error = String;

    fn try_from(level: u8) -> Result<Self, Self::Error> {
        match level {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            2 => Ok(Qos::ExactlyOnce),
            _ => Err(format!("invalid QoS {level}: expected 0, 1 or 2")),
        }
    }
}

impl From<Qos> for u8 {
    fn from(qos: Qos) -> u8 {
        match qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        }
    }
}

/// One level of an MQTT topic name, such as a device id or camera name:
/// not empty, and free of the separator `/`, the wildcards `+` and `#`, and
/// control characters (MQTT forbids U+0000 and discourages the others).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicLevel(String);

impl TopicLevel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicLevel {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.is_empty() {
            return Err("invalid name \"\": expected a non-empty name".to_string());
        }
        if let Some(bad) = text.chars().find(|&c| matches!(c, '/' | '+' | '#') || c.is_control()) {
            return Err(format!(
                "invalid name {text:?}: {bad:?} is not allowed in an MQTT topic level (no \"/\", \"+\", \"#\" or control characters)"
            ));
        }
        Ok(TopicLevel(text))
    }
}

impl From<TopicLevel> for String {
    fn from(level: TopicLevel) -> String {
        level.0
    }
}

impl fmt::Display for TopicLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first levels of every topic, such as `edgedet` or `site-a/edgedet`:
/// levels separated by `/`, none empty, without wildcards or control
/// characters, and not starting with `$` (brokers reserve `$SYS` and the like).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPrefix(String);

impl TopicPrefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TopicPrefix {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if text.starts_with('$') {
            return Err(format!("invalid topic prefix {text:?}: topics starting with \"$\" are reserved by brokers"));
        }
        for level in text.split('/') {
            TopicLevel::try_from(level.to_string())
                .map_err(|_| format!("invalid topic prefix {text:?}: expected non-empty levels separated by \"/\", without \"+\", \"#\" or control characters"))?;
        }
        Ok(TopicPrefix(text))
    }
}

impl From<TopicPrefix> for String {
    fn from(prefix: TopicPrefix) -> String {
        prefix.0
    }
}

impl fmt::Display for TopicPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_rejects_zero() {
        assert!(Port::try_from(0).is_err());
        assert_eq!(Port::try_from(1883).map(Port::get), Ok(1883));
    }

    #[test]
    fn unit_interval_bounds() {
        assert!(UnitInterval::try_from(0.0).is_ok());
        assert!(UnitInterval::try_from(1.0).is_ok());
        assert!(UnitInterval::try_from(1.5).is_err());
        assert!(UnitInterval::try_from(-0.1).is_err());
        assert!(UnitInterval::try_from(f64::NAN).is_err());
    }

    #[test]
    fn topic_level_rejects_separators_and_wildcards() {
        for bad in ["", "a/b", "a+", "#", "tab\there", "nul\0"] {
            assert!(TopicLevel::try_from(bad.to_string()).is_err(), "{bad:?} was accepted");
        }
        assert!(TopicLevel::try_from("front-door.cam_1".to_string()).is_ok());
    }

    #[test]
    fn topic_prefix_rules() {
        assert!(TopicPrefix::try_from("site-a/edgedet".to_string()).is_ok());
        for bad in ["", "/edgedet", "edgedet/", "a//b", "$SYS", "a/+", "a/#"] {
            assert!(TopicPrefix::try_from(bad.to_string()).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn frame_rate_must_be_positive() {
        assert!(FrameRate::try_from(0.0).is_err());
        assert!(FrameRate::try_from(f64::INFINITY).is_err());
        assert!(FrameRate::try_from(2.5).is_ok());
    }
}
