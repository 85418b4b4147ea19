// A loopback HTTP server answering "which training samples support this prediction" from a
// DualDA explainer, through the C API only (libdatacredit.so).  HTTP: cpp-httplib, JSON:
// nlohmann-json (Debian: libcpp-httplib-dev, nlohmann-json3-dev).  The protocol is the one of
// `datacredit serve` (python/datacredit/serve.py):
//   GET /health -> 200 {"status": "ok", "dim", "n_classes", "n_train"}
//   POST /explain {"features": [[...]], "k": 10, "targets": [...], "opponents": false}
//     -> 200 {"indices": [[...]], "values": [[...]]}
//   errors {"error": "..."}: 400 bad JSON / types, 411 no length, 413 body, rows or
//   rows * k over the limit, 422 wrong dimension, k or target out of range, features beyond
//   float32 or non-finite scores (never written as JSON: only standard JSON goes out),
//   404 / 405.
// Robustness as `datacredit serve`: read/write/keep-alive timeouts per connection
// (--timeout seconds), a pool of --http-threads connection threads with a listen backlog of
// 512 (bursts queue instead of being reset), and a cap on rows * k (--max-results).
//
//   datacredit_serve EXPLAINER [--host 127.0.0.1] [--port 8080] [--threads 1]
//                    [--http-threads 64] [--timeout 10] [--max-results 262144]
// (port 0: any free port; the chosen one is printed as "listening on http://HOST:PORT").
#include <datacredit/c_api.h>
#include <httplib.h>
#include <sys/socket.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

constexpr size_t kMaxBody = 8 * 1024 * 1024;  // as DEFAULT_MAX_BODY in serve.py
constexpr size_t kMaxRows = 1024;
int64_t g_max_results = int64_t{1} << 18;  // as DEFAULT_MAX_RESULTS in serve.py
// httplib listens with a backlog of 5 (CPPHTTPLIB_LISTEN_BACKLOG, compiled into Debian's
// libcpp-httplib): bursts of connections are reset.  Its socket-options hook hands us the
// listening socket, and listen() again on it (after the bind) sets a backlog that fits.
constexpr int kBacklog = 512;
int g_listen_fd = -1;

struct Reply {
  int status;
  std::string body;
};

Reply error(int status, const std::string& message) {
  return {status, json{{"error", message}}.dump()};
}

Reply explain(const dc_dualda* h, const std::string& text) {
  int64_t d = 0, n_classes = 0, n_sv = 0, n_train = 0;
  dc_dualda_dim(h, &d, &n_classes);
  dc_dualda_size(h, &n_sv, &n_train);
  const json body = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) return error(400, "the body is not JSON");
  if (!body.is_object()) return error(400, "the body must be a JSON object");
  for (const auto& item : body.items())
    if (item.key() != "features" && item.key() != "k" && item.key() != "targets" &&
        item.key() != "opponents")
      return error(400, "unknown fields: " + item.key());
  const auto rows_it = body.find("features");
  if (rows_it == body.end() || !rows_it->is_array() || rows_it->empty())
    return error(400, "'features' must be a non-empty list of lists of numbers");
  const json& rows = *rows_it;
  for (const json& r : rows)
    if (!r.is_array()) return error(400, "'features' must be a non-empty list of lists of numbers");
  if (rows.size() > kMaxRows)
    return error(413, "at most " + std::to_string(kMaxRows) + " feature rows per request, got " +
                          std::to_string(rows.size()));
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<float> features;
  features.reserve(static_cast<size_t>(n * d));
  bool overflow = false;
  for (const json& r : rows) {
    if (static_cast<int64_t>(r.size()) != d)
      return error(422, "every feature row needs " + std::to_string(d) + " values, got " +
                            std::to_string(r.size()));
    for (const json& x : r) {
      if (!x.is_number()) return error(400, "'features' must hold finite numbers only");
      const double v = x.get<double>();
      if (!std::isfinite(v)) return error(400, "'features' must hold finite numbers only");
      const float f = static_cast<float>(v);
      overflow |= !std::isfinite(f);
      features.push_back(f);
    }
  }
  if (overflow) return error(422, "'features' overflow float32");
  int64_t k = 10;
  if (body.contains("k")) {
    const json& jk = body["k"];
    if (!jk.is_number_integer()) return error(400, "'k' must be an integer");
    k = jk.get<int64_t>();
    if (jk.is_number_unsigned() && jk.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      k = INT64_MAX;
  }
  if (k < 1 || k > n_train)
    return error(422, "'k' = " + std::to_string(k) +
                          " must be in [1, n_train = " + std::to_string(n_train) + "]");
  if (k > g_max_results / n)  // n * k > max_results, without overflow
    return error(413, "rows * k = " + std::to_string(n) + " * " + std::to_string(k) + " exceeds " +
                          std::to_string(g_max_results) +
                          " results per request: send fewer rows or a smaller k");
  std::vector<int32_t> targets;
  if (body.contains("targets") && !body["targets"].is_null()) {
    const json& jt = body["targets"];
    if (!jt.is_array()) return error(400, "'targets' must be a list of integers");
    for (const json& t : jt)
      if (!t.is_number_integer()) return error(400, "'targets' must be a list of integers");
    if (static_cast<int64_t>(jt.size()) != n)
      return error(422, "'targets' needs " + std::to_string(n) + " entries, got " +
                            std::to_string(jt.size()));
    for (const json& t : jt) {
      const bool ok = t.is_number_unsigned()
                          ? t.get<uint64_t>() < static_cast<uint64_t>(n_classes)
                          : (t.get<int64_t>() >= -1 && t.get<int64_t>() < n_classes);
      if (!ok) return error(422, "'targets' must lie in [-1, " + std::to_string(n_classes) + ")");
      targets.push_back(static_cast<int32_t>(t.get<int64_t>()));
    }
  }
  bool opponents = false;
  if (body.contains("opponents")) {
    if (!body["opponents"].is_boolean()) return error(400, "'opponents' must be true or false");
    opponents = body["opponents"].get<bool>();
  }
  std::vector<float> values(static_cast<size_t>(n * k));
  std::vector<int64_t> indices(static_cast<size_t>(n * k));
  if (dc_dualda_topk_ex(h, features.data(), n, d, targets.empty() ? nullptr : targets.data(), k,
                        opponents ? DC_DUALDA_OPPONENTS : 0, 0, values.data(),
                        indices.data()) != DC_OK)
    return error(422, dc_last_error());
  for (const float v : values)  // nlohmann would write null: refuse as the Python server does
    if (!std::isfinite(v))
      return error(422, "the scores overflow float32 (non-finite): the features are too large");
  json out_i = json::array(), out_v = json::array();
  for (int64_t i = 0; i < n; ++i) {
    json ri = json::array(), rv = json::array();
    for (int64_t j = 0; j < k; ++j) {
      ri.push_back(indices[i * k + j]);
      rv.push_back(static_cast<double>(values[i * k + j]));
    }
    out_i.push_back(std::move(ri));
    out_v.push_back(std::move(rv));
  }
  return {200, json{{"indices", out_i}, {"values", out_v}}.dump()};
}

void send(httplib::Response& res, const Reply& r) {
  res.status = r.status;
  res.set_content(r.body, "application/json");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: datacredit_serve EXPLAINER [--host H] [--port N] [--threads T] "
                 "[--http-threads N] [--timeout S] [--max-results R]\n");
    return 2;
  }
  std::string host = "127.0.0.1";
  int port = 8080, threads = 1, http_threads = 64, timeout = 10;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--host")
      host = argv[i + 1];
    else if (flag == "--port")
      port = std::atoi(argv[i + 1]);
    else if (flag == "--threads")
      threads = std::atoi(argv[i + 1]);
    else if (flag == "--http-threads")
      http_threads = std::atoi(argv[i + 1]);
    else if (flag == "--timeout")
      timeout = std::atoi(argv[i + 1]);
    else if (flag == "--max-results")
      g_max_results = std::atoll(argv[i + 1]);
    else {
      std::fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if ((argc - 2) % 2 != 0 || http_threads < 1 || timeout < 1 || g_max_results < 1) {
    std::fprintf(stderr, "datacredit_serve: options need positive values\n");
    return 2;
  }
  dc_dualda* h = nullptr;
  if (dc_dualda_load(argv[1], &h) != DC_OK) {
    std::fprintf(stderr, "datacredit_serve: %s\n", dc_last_error());
    return 1;
  }
  dc_set_num_threads(threads);  // per request; requests themselves run on httplib's pool
  int64_t d = 0, n_classes = 0, n_sv = 0, n_train = 0;
  dc_dualda_dim(h, &d, &n_classes);
  dc_dualda_size(h, &n_sv, &n_train);
  const std::string health =
      json{{"status", "ok"}, {"dim", d}, {"n_classes", n_classes}, {"n_train", n_train}}.dump();

  httplib::Server svr;
  // One pool thread serves one connection at a time (keep-alive included): size it for the
  // concurrent clients; idle or slow connections are closed after `timeout` seconds.
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(http_threads); };
  svr.set_read_timeout(timeout, 0);
  svr.set_write_timeout(timeout, 0);
  svr.set_keep_alive_timeout(timeout);
  svr.set_socket_options([](int fd) {
    int yes = 1;  // httplib's default option, which a custom hook replaces
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    g_listen_fd = fd;
  });
  svr.set_payload_max_length(kMaxBody);  // larger bodies: 413 before they are read
  svr.set_keep_alive_max_count(1000);    // httplib closes after 5 requests by default
  svr.set_tcp_nodelay(true);             // no Nagle / delayed-ACK stall on small replies
  svr.Get("/health",
          [&](const httplib::Request&, httplib::Response& res) { send(res, {200, health}); });
  svr.Post("/explain", [&](const httplib::Request& req, httplib::Response& res) {
    if (!req.has_header("Content-Length"))
      return send(res, error(411, "a Content-Length header is required"));
    try {
      send(res, explain(h, req.body));
    } catch (const std::exception& e) {  // a JSON type error that slipped through the checks
      send(res, error(400, std::string("bad request: ") + e.what()));
    }
  });
  svr.Get("/explain", [&](const httplib::Request&, httplib::Response& res) {
    send(res, error(405, "use POST /explain"));
  });
  svr.Post("/health", [&](const httplib::Request&, httplib::Response& res) {
    send(res, error(405, "use GET /health"));
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {  // every error of httplib itself as JSON too
      const int status = res.status;
      send(res, error(status, status == 413   ? "the body exceeds the limit"
                              : status == 404 ? "no such path"
                              : status == 405 ? "method not allowed"
                                              : "bad request"));
    }
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res,
                               std::exception_ptr) { send(res, error(400, "bad request")); });
  if (port == 0)
    port = svr.bind_to_any_port(host);
  else if (!svr.bind_to_port(host, port))
    port = -1;
  if (port < 0) {
    std::fprintf(stderr, "datacredit_serve: cannot bind %s\n", host.c_str());
    return 1;
  }
  if (g_listen_fd < 0 || ::listen(g_listen_fd, kBacklog) != 0) {
    std::fprintf(stderr, "datacredit_serve: cannot set the listen backlog\n");
    return 1;
  }
  std::printf("listening on http://%s:%d\n", host.c_str(), port);
  std::fflush(stdout);
  svr.listen_after_bind();
  dc_dualda_free(h);
  return 0;
}
