//! Hand-assembled Wasm components for the containment tests: shapes no
//! guest toolchain would produce on purpose (many memories, many
//! instances, one enormous function), a few hundred bytes each.
#![allow(dead_code)]

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn section(id: u8, contents: &[u8], out: &mut Vec<u8>) {
    out.push(id);
    leb(contents.len(), out);
    out.extend_from_slice(contents);
}

/// A core module: one linear memory of `pages` 64 KiB pages if `Some`, and
/// `functions` functions of type `() -> ()`, each with `body` as its code
/// (no locals; `end` is added).
pub fn module(memory_pages: Option<usize>, functions: usize, body: &[u8]) -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    if functions > 0 {
        section(1, &[1, 0x60, 0, 0], &mut m);
        let mut funcs = Vec::new();
        leb(functions, &mut funcs);
        funcs.extend(std::iter::repeat_n(0u8, functions));
        section(3, &funcs, &mut m);
    }
    if let Some(pages) = memory_pages {
        let mut mem = vec![1, 0];
        leb(pages, &mut mem);
        section(5, &mem, &mut m);
    }
    if functions > 0 {
        let mut one = vec![0u8];
        one.extend_from_slice(body);
        one.push(0x0b);
        let mut code = Vec::new();
        leb(functions, &mut code);
        for _ in 0..functions {
            leb(one.len(), &mut code);
            code.extend_from_slice(&one);
        }
        section(10, &code, &mut m);
    }
    m
}

/// A component holding `module` and instantiating it `instances` times.
pub fn component(module: &[u8], instances: usize) -> Vec<u8> {
    let mut c = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, module, &mut c);
    let mut inst = Vec::new();
    leb(instances, &mut inst);
    for _ in 0..instances {
        inst.extend_from_slice(&[0x00, 0x00, 0x00]); // instantiate module 0, no arguments
    }
    section(2, &inst, &mut c);
    c
}

/// A function body that keeps the compiler busy: `n` times
/// `i32.const 1; drop` kept apart by `nop`s would fold away, so each
/// step adds to a running value through a global-free stack dance.
pub fn busy_body(n: usize) -> Vec<u8> {
    let mut b = vec![0x41, 0x00]; // i32.const 0
    for i in 0..n {
        b.extend_from_slice(&[0x41, (i % 64) as u8, 0x6a]); // i32.const k; i32.add
    }
    b.push(0x1a); // drop
    b
}
