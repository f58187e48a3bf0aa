import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;

/**
 * Calls an API with the token token-vendor vends, JDK only (java.net.http, Java 11+).
 *
 * <p>Pattern: read token.header by path for every request. {@link #authorized} is the request-builder helper: every
 * request the app builds starts from it.
 */
public final class Consumer {
    private final Path headerFile;

    Consumer(Path tokenDir) {
        this.headerFile = tokenDir.resolve("token.header");
    }

    /** A request builder carrying the current {@code Authorization} header. */
    HttpRequest.Builder authorized(URI uri) throws IOException {
        // By path, every time: each refresh replaces the file with a new one.
        return HttpRequest.newBuilder(uri)
                .header("Authorization", Files.readString(headerFile))
                .timeout(Duration.ofSeconds(5));
    }

    // --- The example contract (TOKEN_DIR, API_URL, DURATION in; `requests=N rejected=M` out) ---

    public static void main(String[] args) throws InterruptedException {
        String tokenDir = System.getenv("TOKEN_DIR");
        String apiUrl = System.getenv("API_URL");
        double duration;
        try {
            duration = Double.parseDouble(String.valueOf(System.getenv("DURATION")));
        } catch (NumberFormatException e) {
            duration = -1;
        }
        if (tokenDir == null || apiUrl == null || duration < 0) {
            System.err.println("java: set TOKEN_DIR, API_URL and DURATION (seconds)");
            System.exit(2);
        }
        Consumer consumer = new Consumer(Path.of(tokenDir));
        URI uri = URI.create(apiUrl);
        HttpClient client = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        long requests = 0;
        long rejected = 0;
        long start = System.nanoTime();
        long end = start + (long) (duration * 1e9);
        while (System.nanoTime() < end) {
            requests++;
            String problem = null;
            try {
                HttpRequest request = consumer.authorized(uri).GET().build();
                int status = client.send(request, HttpResponse.BodyHandlers.discarding()).statusCode();
                if (status < 200 || status > 299) {
                    problem = "HTTP " + status;
                }
            } catch (IOException e) {
                problem = e.toString();
            }
            if (problem != null && ++rejected <= 3) {
                System.err.println("java: request " + requests + ": " + problem);
            }
            // Ten a second, on a fixed schedule, so a slow answer does not lower the rate.
            long waitNanos = start + requests * 100_000_000L - System.nanoTime();
            if (waitNanos > 0) {
                Thread.sleep(waitNanos / 1_000_000, (int) (waitNanos % 1_000_000));
            }
        }
        System.out.println("requests=" + requests + " rejected=" + rejected);
    }
}
