package fr.sonco.fhir.server;

import java.nio.file.Path;
import java.time.Duration;

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

    /** Directory for server state. The embedded H2 database is in its {@code h2/} subdirectory. */
    private Path dataDir = Path.of("data");

    /**
     * Directory scanned recursively for FHIR conformance resources ({@code *.json}) at startup.
     * When unset, nothing is loaded.
     */
    private Path profilesDir;

    /**
     * FHIR NPM package ({@code .tgz}) installed at startup through HAPI's package installer, before
     * {@code profilesDir} is loaded. When unset, no package is installed.
     */
    private Path profilesPackage;

    /** Database kind, which selects the Hibernate dialect and the default JDBC URL. */
    private DatabaseKind db = DatabaseKind.H2;

    /** Maximum time, in seconds, that a request arriving during startup waits for the server to be ready. */
    private long startupRequestWaitSeconds = 300;

    /**
     * Whether a batch2 job step that produces one work chunk starts the next step at once. The
     * javadoc of HAPI FHIR's {@code JpaStorageSettings} calls this useful for tests and not
     * recommended for production.
     */
    private boolean jobFastTracking = true;

    /**
     * Interval of HAPI's batch2 maintenance pass, which starts queued jobs and advances their steps.
     * HAPI FHIR's default is one minute.
     */
    private Duration jobMaintenanceInterval = Duration.ofSeconds(5);

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

    public Path getProfilesPackage() {
        return profilesPackage;
    }

    public void setProfilesPackage(Path profilesPackage) {
        this.profilesPackage = profilesPackage;
    }

    public DatabaseKind getDb() {
        return db;
    }

    public void setDb(DatabaseKind db) {
        this.db = db;
    }

    public boolean isJobFastTracking() {
        return jobFastTracking;
    }

    public void setJobFastTracking(boolean jobFastTracking) {
        this.jobFastTracking = jobFastTracking;
    }

    public Duration getJobMaintenanceInterval() {
        return jobMaintenanceInterval;
    }

    public void setJobMaintenanceInterval(Duration jobMaintenanceInterval) {
        this.jobMaintenanceInterval = jobMaintenanceInterval;
    }

    public long getStartupRequestWaitSeconds() {
        return startupRequestWaitSeconds;
    }

    public void setStartupRequestWaitSeconds(long startupRequestWaitSeconds) {
        this.startupRequestWaitSeconds = startupRequestWaitSeconds;
    }
}
