//! `fmnist serve` for real: the binary on a loopback port, every endpoint and error,
//! then a graceful stop on SIGINT.

mod common;

use common::{SYSTEM_DATA, Sandbox, Server};

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    )
}

/// Status and body of a POST to /api/predict.
fn post(base: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let mut r = agent()
        .post(format!("{base}/api/predict"))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_string()
        .unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}")),
    )
}

/// An upload of `len` bytes over a raw socket: the server answers 413 as soon as it sees
/// the declared length, before the body arrives, which an HTTP client reports as a broken
/// pipe rather than as the answer.
fn post_oversized(base: &str, len: usize) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: image/png\r\n\
         Content-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(&vec![0u8; len]); // the server may close before it all arrives
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {reply}")),
    )
}

fn get(base: &str, path: &str) -> (u16, String) {
    let mut r = agent().get(format!("{base}{path}")).call().unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}

fn boot_png(sb: &Sandbox) -> Vec<u8> {
    let data = fmnist::data::load(&fmnist::DataOptions {
        data_dir: Some(SYSTEM_DATA.into()),
        offline: true,
        verbose: false,
    })
    .unwrap();
    let px = data.test.image(0).to_vec(); // an ankle boot
    let img = image::GrayImage::from_raw(28, 28, px).unwrap();
    img.save(sb.path("boot.png")).unwrap();
    std::fs::read(sb.path("boot.png")).unwrap()
}

/// `fmnist predict --json --top 10` of boot.png with `extra` arguments.
fn predict_boot(sb: &Sandbox, extra: &[&str]) -> serde_json::Value {
    let args = [
        "predict",
        "m.safetensors",
        "boot.png",
        "--json",
        "--top",
        "10",
    ];
    serde_json::from_str(&sb.ok(&[&args[..], extra].concat())).unwrap()
}

#[test]
fn every_endpoint_and_error_then_a_graceful_stop() {
    let sb = Sandbox::new();
    sb.quick_model(3000, 500);
    let png = boot_png(&sb);
    let cli = predict_boot(&sb, &[]);
    let server = Server::start(&sb, &["--max-upload-mib", "1"]);
    let base = server.base.clone();

    assert_eq!(
        get(&base, "/api/health"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let (status, page) = get(&base, "/");
    assert_eq!(status, 200);
    assert!(page.contains("What is this garment?") && page.contains("/api/predict"));
    let (status, info) = get(&base, "/api/model");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["name"], "simple");
    assert_eq!(info["parameters"], 225_034);
    assert_eq!(info["classes"][9], "Ankle boot");
    assert_eq!(info["training"]["epochs"], 1);

    // Raw body and multipart give what `predict --json` gives, plus the input.
    let (status, raw) = post(&base, "image/png", &png);
    assert_eq!(status, 200, "{raw}");
    for key in [
        "class",
        "label",
        "probability",
        "unsure",
        "top",
        "pair",
        "narrow",
    ] {
        assert_eq!(raw[key], cli[key], "{key}");
    }
    assert_eq!(raw["input"].as_array().unwrap().len(), 784);
    let boundary = "fmnistboundary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"boot.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&png);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (status, multi) = post(
        &base,
        &format!("multipart/form-data; boundary={boundary}"),
        &form,
    );
    assert_eq!(status, 200, "{multi}");
    assert_eq!(multi, raw);

    // Errors: JSON with the right 4xx status.
    let (status, e) = post(&base, "text/plain", b"hello");
    assert_eq!(status, 415, "{e}");
    assert!(e["error"].as_str().unwrap().contains("text/plain"));
    let (status, e) = post(&base, "image/png", b"definitely not a picture");
    assert_eq!(status, 415, "{e}");
    let (status, e) = post(&base, "image/png", &png[..png.len() / 2]);
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .starts_with("cannot decode the image")
    );
    let (status, e) = post(&base, "image/png", b"");
    assert_eq!(status, 400, "{e}");
    let (status, e) = post_oversized(&base, 2 << 20);
    assert_eq!(status, 413, "{e}");
    assert!(e["error"].as_str().unwrap().contains("1 MiB"), "{e}");
    let (status, e) = get(&base, "/nope");
    assert_eq!(status, 404, "{e}");
    assert!(e.contains("error"));

    // A random test image with its label.
    let mut r = agent().get(format!("{base}/api/sample")).call().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    let label: usize = r.headers()["x-label"].to_str().unwrap().parse().unwrap();
    assert!(label < 10);
    let sample = r.body_mut().read_to_vec().unwrap();
    assert_eq!(image::load_from_memory(&sample).unwrap().width(), 28);

    // A client that stalls in the middle of its request does not keep Ctrl-C from
    // stopping the server.
    let mut stalled = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    std::io::Write::write_all(&mut stalled, b"POST /api/predict HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (status, rest) = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn serving_an_unusable_model_fails_with_one_line() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("m.safetensors"), b"junk").unwrap();
    sb.fails(
        &["serve", "m.safetensors", "--addr", "127.0.0.1:0"],
        "not a usable fmnist model",
    );
}

/// Clients that connect and then send nothing, or half a request, are cut off after the
/// header timeout; open connections are capped, so a flood of them holds a bounded number
/// of descriptors and a real request waits for a free slot instead of being refused.
#[test]
fn silent_clients_are_cut_off_and_connections_are_capped() {
    use fmnist::serve::{HEADER_TIMEOUT, MAX_CONNECTIONS};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let sb = Sandbox::new();
    sb.quick_model(1000, 200);
    let server = Server::start(&sb, &[]);
    let addr = server.base.trim_start_matches("http://").to_string();
    let started = Instant::now();
    let mut silent: Vec<TcpStream> = (0..MAX_CONNECTIONS + 64)
        .map(|_| TcpStream::connect(&addr).expect("the kernel queues the connection"))
        .collect();
    silent[0]
        .write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let descriptors = std::fs::read_dir(format!("/proc/{}/fd", server.child.id()))
        .unwrap()
        .count();
    assert!(
        descriptors <= MAX_CONNECTIONS + 32,
        "{descriptors} descriptors open for {} connections",
        silent.len()
    );

    let (status, body) = get(&server.base, "/api/health");
    let waited = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(
        waited >= HEADER_TIMEOUT - Duration::from_secs(2),
        "answered after {waited:?}: the silent connections were not holding every slot"
    );
    assert!(waited < HEADER_TIMEOUT * 3, "answered after {waited:?}");
    // The first silent clients, the half request among them, were closed by the server.
    for client in &mut silent[..2] {
        client.set_read_timeout(Some(HEADER_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(client.read(&mut buf).map_err(|e| e.kind()), Ok(0));
    }
    drop(silent);
    let (status, _) = server.stop();
    assert!(status.success(), "{status:?}");
}

/// Sends `request` as it is over a raw socket; returns the status, the body and how long
/// the answer took.
fn raw_exchange(base: &str, request: &[u8]) -> (u16, String, std::time::Duration) {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let _ = s.write_all(request); // the server may answer and close before it all arrives
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).to_string();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body, started.elapsed())
}

fn json_error(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body:?}"));
    v["error"].as_str().expect("an error message").to_string()
}

#[test]
fn every_refusal_has_its_status_and_a_json_body() {
    let sb = Sandbox::new();
    sb.quick_model(300, 100);
    let server = Server::start(&sb, &[]);
    let base = server.base.clone();
    // A 9 MiB multipart upload (the limit is 8 MiB): 413, not 400.
    let boundary = "b0undary";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    form.extend(vec![7u8; 9 << 20]);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut request = format!(
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        form.len()
    )
    .into_bytes();
    request.extend(&form);
    let (status, body, _) = raw_exchange(&base, &request);
    assert_eq!(status, 413, "{body}");
    assert!(json_error(&body).contains("8 MiB"), "{body}");
    // Sent in chunks, without a declared length, it is cut off at the limit all the same.
    let mut chunked = format!(
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; \
         boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in form.chunks(1 << 20) {
        chunked.extend(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend(part);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let (status, body, _) = raw_exchange(&base, &chunked);
    assert_eq!(status, 413, "{body}");
    // A declared trillion bytes and no body: 413 at once, not 408 after 30 s.
    let (status, body, took) = raw_exchange(
        &base,
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
          Content-Length: 1000000000000\r\n\r\n",
    );
    assert_eq!(status, 413, "{body}");
    assert!(json_error(&body).contains("8 MiB"));
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    // Errors of the HTTP layer are JSON too.
    let (status, body, _) = raw_exchange(
        &base,
        b"DELETE /api/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 405, "{body}");
    assert!(json_error(&body).contains("method"));
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "a".repeat(10 << 10)
    );
    let (status, body, _) = raw_exchange(&base, long.as_bytes());
    assert_eq!(status, 414, "{body}");
    assert!(json_error(&body).contains("address"));
    let big_header = format!(
        "GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "b".repeat(20 << 10)
    );
    let (status, body, _) = raw_exchange(&base, big_header.as_bytes());
    assert_eq!(status, 431, "{body}");
    assert!(json_error(&body).contains("headers"));
    // The server still answers.
    assert_eq!(get(&base, "/api/health").0, 200);
}

#[test]
fn every_copy_of_the_served_model_infers_in_the_precision_asked_for() {
    let sb = Sandbox::new();
    sb.quick_model(3000, 500);
    let png = boot_png(&sb);
    let Some(isa) = nn::Bf16Isa::detect() else {
        sb.fails(
            &["serve", "m.safetensors", "--precision", "bf16"],
            "needs a CPU with AVX512-BF16 or AMX-BF16",
        );
        return;
    };
    let predict = |p: &str| predict_boot(&sb, &["--precision", p])["top"].clone();
    let (bf16, fp32) = (predict("bf16"), predict("fp32"));
    assert_ne!(
        bf16, fp32,
        "the image does not tell bf16 from fp32 inference"
    );
    // Two copies of the model (one per thread): requests at once reach both.
    let server = Server::start(&sb, &["--precision", "bf16", "--threads", "2"]);
    let base = server.base.clone();
    let (_, info) = get(&base, "/api/model");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["precision"], nn::Precision::Bf16(isa).name());
    let answers: Vec<serde_json::Value> = std::thread::scope(|s| -> Vec<_> {
        let calls: Vec<_> = (0..8)
            .map(|_| s.spawn(|| post(&base, "image/png", &png)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    })
    .into_iter()
    .chain((0..4).map(|_| post(&base, "image/png", &png)))
    .map(|(status, body)| {
        assert_eq!(status, 200, "{body}");
        body["top"].clone()
    })
    .collect();
    for top in answers {
        assert_eq!(top, bf16);
    }
    server.stop();
}

#[test]
fn an_ensemble_serves_as_one_model() {
    let sb = Sandbox::new();
    sb.ok(&[
        "train",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--val-size",
        "500",
        "--members",
        "2",
        "--out",
        "m.safetensors",
        "--offline",
    ]);
    let png = boot_png(&sb);
    let cli = predict_boot(&sb, &[]);
    let server = Server::start(&sb, &["--concurrency", "2"]);
    let (status, info) = get(&server.base, "/api/model");
    assert_eq!(status, 200);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["name"], "ensemble of 2 simple");
    assert_eq!(info["networks"], 2);
    assert_eq!(info["parameters"], 2 * 225_034);
    let ensemble = info["training"]["ensemble_test_accuracy"].as_f64().unwrap();
    let first = info["training"]["test_accuracy"].as_f64().unwrap();
    assert!(ensemble != first && ensemble > 0.5, "{info}");
    // The page shows the ensemble's figure.
    let (_, page) = get(&server.base, "/");
    assert!(page.contains("t.ensemble_test_accuracy || t.test_accuracy"));
    // What `predict` answers, from either copy of the model.
    for _ in 0..2 {
        let (status, answer) = post(&server.base, "image/png", &png);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["top"], cli["top"]);
    }
}
