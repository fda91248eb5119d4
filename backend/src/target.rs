//! The compilation target: the host ISA from cranelift-native, with settings the caller picks.
//!
//! Settings are Cranelift's own names, either shared (`opt_level`, `enable_verifier`,
//! `preserve_frame_pointers`, ...) or ISA-specific (`has_sse41`, `has_avx`, ...), written
//! `name=value` or just `name` for a boolean `true`. The same [`TargetOptions`] build the ISA for
//! both the direct and the separate-link path, so the two compile identical code.

use std::sync::Arc;

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};

use crate::error::{BackendError, Result};

#[derive(Debug, Clone)]
pub struct TargetOptions {
    /// `none`, `speed` or `speed_and_size`.
    pub opt_level: String,
    /// Detect the host CPU's features (cranelift-native); otherwise start from the baseline.
    pub native_features: bool,
    /// Extra settings, applied in order after the defaults.
    pub settings: Vec<String>,
}

impl Default for TargetOptions {
    fn default() -> Self {
        TargetOptions {
            opt_level: "speed".into(),
            native_features: true,
            settings: Vec::new(),
        }
    }
}

impl TargetOptions {
    pub fn isa(&self) -> Result<OwnedTargetIsa> {
        let mut shared = settings::builder();
        let set = |b: &mut dyn Configurable, name: &str, value: &str| {
            b.set(name, value).map_err(|e| BackendError::Setting {
                name: name.to_string(),
                message: e.to_string(),
            })
        };
        set(&mut shared, "opt_level", &self.opt_level)?;
        // Imports from shared libraries will go through the GOT; calls within the executable
        // stay direct (`colocated`), so PIC costs nothing for them.
        set(&mut shared, "is_pic", "true")?;
        set(&mut shared, "enable_verifier", "true")?;
        // Thread-locals by the general-dynamic sequence, the one every linker knows; the image
        // relaxes it to local-exec for the executable's own (`--set tls_model=...` overrides).
        set(&mut shared, "tls_model", "elf_gd")?;
        let mut isa = cranelift_native::builder_with_options(self.native_features)
            .map_err(|e| BackendError::Host(e.to_string()))?;
        for s in &self.settings {
            let (name, value) = match s.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim()),
                None => (s.trim(), "true"),
            };
            // A name belongs to either the shared or the ISA group: try ISA flags first.
            match isa.set(name, value) {
                Ok(()) => {}
                Err(settings::SetError::BadName(_)) => set(&mut shared, name, value)?,
                Err(e) => {
                    return Err(BackendError::Setting {
                        name: name.to_string(),
                        message: e.to_string(),
                    })
                }
            }
        }
        let isa = isa
            .finish(settings::Flags::new(shared))
            .map_err(|e| BackendError::Setting {
                name: "isa".into(),
                message: e.to_string(),
            })?;
        Ok(isa)
    }

    /// The settings as one line, for reports and for recording in the executable.
    pub fn describe(isa: &Arc<dyn cranelift_codegen::isa::TargetIsa>) -> String {
        let mut parts: Vec<String> = isa
            .flags()
            .iter()
            .chain(isa.isa_flags())
            .map(|v| v.to_string())
            .collect();
        parts.sort();
        format!("{} {}", isa.triple(), parts.join(" "))
    }
}
