package fr.sonco.fhir.server;

import java.io.IOException;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;
import org.springframework.web.filter.OncePerRequestFilter;

import jakarta.servlet.FilterChain;
import jakarta.servlet.ServletException;
import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;

/**
 * Holds FHIR requests until startup has finished.
 *
 * <p>Spring Boot opens the HTTP port before HAPI's own startup listeners run (they react to
 * {@code ContextRefreshedEvent}, which Spring publishes after starting the web server) and before
 * {@link ConformanceResourceLoader} has stored the profiles. A request arriving in that window
 * waits here, so the first response to {@code GET /fhir/metadata} comes from a fully started server
 * with its profiles loaded. After {@code sonco.startup-request-wait-seconds} the request gets 503.
 */
@Component
public class StartupGateFilter extends OncePerRequestFilter {

    private static final Logger log = LoggerFactory.getLogger(StartupGateFilter.class);

    private final CountDownLatch readyLatch = new CountDownLatch(1);
    private final long maxWaitSeconds;

    public StartupGateFilter(SoncoProperties soncoProperties) {
        this.maxWaitSeconds = soncoProperties.getStartupRequestWaitSeconds();
    }

    /** Opens the gate once Spring Boot reports the application ready, which is after all startup runners. */
    @EventListener(ApplicationReadyEvent.class)
    public void open() {
        readyLatch.countDown();
    }

    @Override
    protected void doFilterInternal(HttpServletRequest request, HttpServletResponse response, FilterChain chain)
            throws ServletException, IOException {
        if (readyLatch.getCount() > 0 && !awaitReady()) {
            log.warn("Rejected {} {} with 503: the server was not ready within {} s",
                    request.getMethod(), request.getRequestURI(), maxWaitSeconds);
            response.sendError(HttpServletResponse.SC_SERVICE_UNAVAILABLE,
                    "The FHIR server is still starting, retry later");
            return;
        }
        chain.doFilter(request, response);
    }

    private boolean awaitReady() {
        try {
            return readyLatch.await(maxWaitSeconds, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}
