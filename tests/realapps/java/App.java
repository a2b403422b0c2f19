// The Java service of the real-application harness, run under the opentelemetry-javaagent at its
// defaults: the JDK's com.sun.net.httpserver makes the SERVER span, java.net.http.HttpClient the
// CLIENT spans. GET /compute calls the Go service's /leaf, with lookup=1 the Python service's
// /lookup (Python as a backend), and with uninstr=1 an uninstrumented plain HTTP endpoint; it
// answers 500 when a call failed.
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.Executors;

public final class App {
  private static final HttpClient CLIENT =
      HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).connectTimeout(Duration.ofSeconds(10)).build();

  public static void main(String[] args) throws IOException {
    int port = Integer.parseInt(System.getenv("REALAPPS_PORT"));
    String goURL = System.getenv("REALAPPS_GO_URL");
    String plainURL = System.getenv("REALAPPS_PLAIN_URL");
    String pythonURL = System.getenv("REALAPPS_PYTHON_URL");
    HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 128);
    server.setExecutor(Executors.newFixedThreadPool(32));
    server.createContext("/health", ex -> reply(ex, 200, "ok"));
    server.createContext("/compute", ex -> {
      String query = ex.getRequestURI().getRawQuery();
      if (query == null) {
        query = "";
      }
      int status = 200;
      StringBuilder body = new StringBuilder();
      try {
        HttpResponse<String> leaf = get(goURL + "/leaf?" + query);
        status = leaf.statusCode() >= 500 ? 500 : 200;
        body.append(leaf.body().trim());
        if (query.contains("lookup=1")) {
          HttpResponse<String> lookup = get(pythonURL + "/lookup?" + query);
          if (lookup.statusCode() >= 500) {
            status = 500;
          }
          body.append('+').append(lookup.body().trim());
        }
        if (query.contains("uninstr=1")) {
          HttpResponse<String> plain = get(plainURL + "/plain");
          if (plain.statusCode() >= 500) {
            status = 500;
          }
          body.append('+').append(plain.body().trim());
        }
      } catch (IOException | InterruptedException e) {
        status = 502;
        body.append(e);
      }
      reply(ex, status, body.toString());
    });
    server.start();
    // The agent's shutdown hook flushes the batch processor on SIGTERM; stop the server first.
    Runtime.getRuntime().addShutdownHook(new Thread(() -> server.stop(0)));
  }

  private static HttpResponse<String> get(String url) throws IOException, InterruptedException {
    HttpRequest req = HttpRequest.newBuilder(URI.create(url)).timeout(Duration.ofSeconds(30)).GET().build();
    return CLIENT.send(req, HttpResponse.BodyHandlers.ofString());
  }

  private static void reply(HttpExchange ex, int status, String body) throws IOException {
    byte[] b = (body + "\n").getBytes(StandardCharsets.UTF_8);
    ex.sendResponseHeaders(status, b.length);
    try (OutputStream os = ex.getResponseBody()) {
      os.write(b);
    }
  }
}
