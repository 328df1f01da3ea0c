package fr.sonco.fhir.server;

import java.nio.file.Path;

import org.springframework.boot.context.properties.ConfigurationProperties;

/**
 * Launcher settings under the {@code sonco.} prefix. Spring's relaxed binding also reads
 * them from environment variables such as {@code SONCO_DATA_DIR}.
 */
@ConfigurationProperties(prefix = "sonco")
public class SoncoProperties {

    /** Database kinds the launcher can configure a Hibernate dialect for. */
    public enum DatabaseKind {
        H2,
        POSTGRESQL
    }

    /** Directory for server state; the embedded H2 database lives in its {@code h2/} subdirectory. */
    private Path dataDir = Path.of("data");

    /** Directory scanned recursively for FHIR conformance resources ({@code *.json}) at startup; unset skips loading. */
    private Path profilesDir;

    /** Database kind; selects the Hibernate dialect and the default JDBC URL. */
    private DatabaseKind db = DatabaseKind.H2;

    /** Maximum time, in seconds, that a request arriving during startup waits for the server to become ready. */
    private long startupRequestWaitSeconds = 300;

    public Path getDataDir() {
        return dataDir;
    }

    public void setDataDir(Path dataDir) {
        this.dataDir = dataDir;
    }

    public Path getProfilesDir() {
        return profilesDir;
    }

    public void setProfilesDir(Path profilesDir) {
        this.profilesDir = profilesDir;
    }

    public DatabaseKind getDb() {
        return db;
    }

    public void setDb(DatabaseKind db) {
        this.db = db;
    }

    public long getStartupRequestWaitSeconds() {
        return startupRequestWaitSeconds;
    }

    public void setStartupRequestWaitSeconds(long startupRequestWaitSeconds) {
        this.startupRequestWaitSeconds = startupRequestWaitSeconds;
    }
}
