//! MQTT topic names, all under `<prefix>/<device>/`.

/// Builds the topic names of one device. Its parts are checked by the config
/// ([`crate::config::values::TopicLevel`]), so the results are valid topic
/// names without wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// `<prefix>/<device>`, without a trailing `/`.
    base: String,
}

impl Topics {
    pub fn new(prefix: &str, device_id: &str) -> Topics {
        Topics { base: format!("{prefix}/{device_id}") }
    }

    /// Retained `online`/`offline` of the daemon, also its last will.
    pub fn device_status(&self) -> String {
        format!("{}/status", self.base)
    }

    /// Periodic stats JSON of the daemon.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.base)
    }

    /// Retained `online`/`offline` of one camera.
    pub fn camera_status(&self, camera: &str) -> String {
        format!("{}/{camera}/status", self.base)
    }

    /// Detections JSON of one camera, one message per processed frame.
    pub fn detections(&self, camera: &str) -> String {
        format!("{}/{camera}/detections", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::Topics;

    #[test]
    fn topics_are_under_prefix_and_device() {
        let topics = Topics::new("site-a/edgedet", "porch");
        assert_eq!(topics.device_status(), "site-a/edgedet/porch/status");
        assert_eq!(topics.stats(), "site-a/edgedet/porch/stats");
        assert_eq!(topics.camera_status("door"), "site-a/edgedet/porch/door/status");
        assert_eq!(topics.detections("door"), "site-a/edgedet/porch/door/detections");
    }

    #[test]
    fn camera_named_status_keeps_own_topic() {
        let topics = Topics::new("edgedet", "porch");
        assert_ne!(topics.camera_status("status"), topics.device_status());
        assert_ne!(topics.detections("stats"), topics.stats());
    }
}
