package fr.sonco.fhir.server;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.boot.web.context.WebServerApplicationContext;
import org.springframework.context.event.ContextClosedEvent;
import org.springframework.context.event.EventListener;
import org.springframework.stereotype.Component;

/** Logs when the server is ready for requests and when it starts to shut down. */
@Component
public class ServerLifecycleLogger {

    private static final Logger log = LoggerFactory.getLogger(ServerLifecycleLogger.class);

    @EventListener(ApplicationReadyEvent.class)
    public void logReady(ApplicationReadyEvent event) {
        if (event.getApplicationContext() instanceof WebServerApplicationContext webContext) {
            String address = webContext.getEnvironment().getProperty("server.address", "0.0.0.0");
            int port = webContext.getWebServer().getPort();
            log.info("sonco-fhir server ready: FHIR R4 base http://{}:{}/fhir", address, port);
        } else {
            log.info("sonco-fhir server ready");
        }
    }

    /** Logs the start of shutdown (e.g. after SIGTERM), which comes before requests are drained and the database is closed. */
    @EventListener(ContextClosedEvent.class)
    public void logShutdown() {
        log.info("sonco-fhir server shutting down: finishing requests in progress, then closing the database");
    }
}
