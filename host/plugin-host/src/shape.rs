//! A component's shape, read before anything compiles it: how many core
//! instances it creates, how many functions it carries and how big the
//! biggest is. Compiling costs time and memory superlinear in the size of
//! one function, and every instance a call creates takes a slot of the
//! shared instance pool, so both are bounded per slot before a tenant's
//! upload reaches the compiler.

use super::LoadError;
use wasmparser::{Instance, Parser, Payload};

/// What one component may be, at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeLimits {
    /// Core instances created per call.
    pub core_instances: u32,
    /// Linear memories per call.
    pub memories: u32,
    /// Tables per call.
    pub tables: u32,
    /// Functions with bodies, over every module.
    pub functions: u32,
    /// Bytes of the largest function body.
    pub function_bytes: u32,
    /// Locals of the largest function.
    pub locals: u32,
}

/// The platform's limits, the same for every slot: generous for real
/// guests (the Python guest, the biggest we ship, is well inside), far
/// below what takes the compiler minutes.
/// Measured: the Python guest creates 38 core instances, 1 memory and 2
/// tables, has 13,478 functions, the largest 427 KB (CPython's eval loop)
/// with 271 locals.
pub const LIMITS: ShapeLimits = ShapeLimits {
    core_instances: 64,
    memories: 4,
    tables: 8,
    functions: 60_000,
    function_bytes: 640 << 10,
    locals: 10_000,
};

/// What [`inspect`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub core_instances: u32,
    pub functions: u32,
    pub function_bytes: u32,
    pub locals: u32,
    pub code_bytes: u64,
}

/// Reads the component's structure; refuses what the limits do not allow.
/// Validation proper is the compiler's job; this only counts.
pub fn inspect(bytes: &[u8], limits: &ShapeLimits) -> Result<Shape, LoadError> {
    let mut shape = Shape::default();
    let invalid = |e: wasmparser::BinaryReaderError| LoadError::Invalid(e.to_string());
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let Instance::Instantiate { .. } = instance.map_err(invalid)? {
                        shape.core_instances += 1;
                    }
                }
            }
            Payload::CodeSectionStart { count, size, .. } => {
                shape.functions = shape.functions.saturating_add(count);
                shape.code_bytes += u64::from(size);
            }
            Payload::CodeSectionEntry(body) => {
                let size = (body.range().end - body.range().start) as u32;
                shape.function_bytes = shape.function_bytes.max(size);
                let mut locals = 0u32;
                for local in body.get_locals_reader().map_err(invalid)? {
                    locals = locals.saturating_add(local.map_err(invalid)?.0);
                }
                shape.locals = shape.locals.max(locals);
            }
            _ => {}
        }
    }
    let over = |what: &str, n: u32, max: u32| -> Result<(), LoadError> {
        if n > max {
            return Err(LoadError::OverBudget(format!("{what}: {n}, at most {max}")));
        }
        Ok(())
    };
    over(
        "core instances",
        shape.core_instances,
        limits.core_instances,
    )
    .map_err(|_| LoadError::TooManyInstances {
        found: shape.core_instances,
        max: limits.core_instances,
    })?;
    over("functions", shape.functions, limits.functions)?;
    over(
        "bytes in one function",
        shape.function_bytes,
        limits.function_bytes,
    )?;
    over("locals in one function", shape.locals, limits.locals)?;
    Ok(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Components of other shapes are refused in `tests/hostile.rs`
    // (`tests/support/forge.rs` assembles them).
    #[test]
    fn the_demo_plugins_fit_with_room_to_spare() {
        for b in crate::builtin::BUILTINS {
            let shape = inspect(b.bytes, &LIMITS).expect(b.name);
            assert!(
                shape.core_instances >= 1 && shape.functions > 10,
                "{}: {shape:?}",
                b.name
            );
        }
    }
}
