package fr.sonco.fhir.server;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.regex.Pattern;

import javax.sql.DataSource;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.jdbc.DataSourceProperties;
import org.springframework.boot.context.properties.ConfigurationProperties;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.util.StringUtils;

import com.zaxxer.hikari.HikariDataSource;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;

import jakarta.persistence.EntityManagerFactory;

/**
 * Configures the JDBC pool, the JPA entity manager factory and the transaction manager for
 * either the embedded H2 file database (default) or PostgreSQL.
 */
@Configuration(proxyBeanMethods = false)
public class DatabaseConfig {

    private static final Logger log = LoggerFactory.getLogger(DatabaseConfig.class);

    /** Base name of the H2 database files inside {@code ${sonco.data-dir}/h2/}. */
    static final String H2_DATABASE_NAME = "sonco-fhir";

    private static final Pattern PASSWORD_PARAMETER = Pattern.compile("(?i)(password=)[^&;]*");

    /**
     * Creates the Hikari pool from {@code spring.datasource.*} and {@code spring.datasource.hikari.*}.
     * For H2 without an explicit URL, the URL points at a file database under the data directory.
     */
    @Bean
    @ConfigurationProperties("spring.datasource.hikari")
    public HikariDataSource dataSource(DataSourceProperties dataSourceProperties, SoncoProperties soncoProperties) {
        String jdbcUrl = resolveJdbcUrl(dataSourceProperties.getUrl(), soncoProperties);
        log.info("Database: {} at {}", soncoProperties.getDb(), redactPassword(jdbcUrl));
        return dataSourceProperties.initializeDataSourceBuilder()
                .type(HikariDataSource.class)
                .url(jdbcUrl)
                .build();
    }

    @Bean
    @Primary
    public LocalContainerEntityManagerFactoryBean entityManagerFactory(
            ConfigurableListableBeanFactory beanFactory,
            FhirContext fhirContext,
            JpaStorageSettings storageSettings,
            DataSource dataSource,
            SoncoProperties soncoProperties) {
        LocalContainerEntityManagerFactoryBean factory =
                HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
        factory.setPersistenceUnitName("HAPI_PU");
        factory.setDataSource(dataSource);
        factory.setJpaProperties(hibernateProperties(soncoProperties.getDb()));
        return factory;
    }

    @Bean
    @Primary
    public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
        return new JpaTransactionManager(entityManagerFactory);
    }

    /**
     * Resolves the JDBC URL to use and checks that it matches {@code sonco.db}.
     *
     * @throws IllegalStateException if the URL is missing for PostgreSQL or belongs to the other database kind
     */
    static String resolveJdbcUrl(String configuredUrl, SoncoProperties soncoProperties) {
        boolean urlConfigured = StringUtils.hasText(configuredUrl);
        switch (soncoProperties.getDb()) {
            case H2 -> {
                if (!urlConfigured) {
                    return defaultH2Url(soncoProperties.getDataDir());
                }
                if (!configuredUrl.startsWith("jdbc:h2:")) {
                    throw new IllegalStateException("spring.datasource.url '" + configuredUrl
                            + "' is not an H2 URL but sonco.db is h2; set sonco.db=postgresql for a PostgreSQL URL");
                }
                return configuredUrl;
            }
            case POSTGRESQL -> {
                if (!urlConfigured) {
                    throw new IllegalStateException("sonco.db is postgresql but spring.datasource.url is not set;"
                            + " set it to jdbc:postgresql://HOST:PORT/DATABASE");
                }
                if (!configuredUrl.startsWith("jdbc:postgresql:")) {
                    throw new IllegalStateException("spring.datasource.url '" + configuredUrl
                            + "' is not a PostgreSQL URL but sonco.db is postgresql");
                }
                return configuredUrl;
            }
            default -> throw new IllegalStateException("Unsupported sonco.db: " + soncoProperties.getDb());
        }
    }

    /** Replaces the value of a {@code password=} URL parameter, so the URL can be logged. */
    static String redactPassword(String jdbcUrl) {
        return PASSWORD_PARAMETER.matcher(jdbcUrl).replaceAll("$1***");
    }

    /**
     * Creates {@code DATA_DIR/h2/} if missing and returns the file-database URL inside it.
     * DB_CLOSE_ON_EXIT=FALSE leaves closing to the pool at Spring shutdown, so H2's own JVM
     * shutdown hook cannot close the database while requests are still finishing.
     */
    private static String defaultH2Url(Path dataDir) {
        Path h2Dir = dataDir.resolve("h2").toAbsolutePath().normalize();
        try {
            Files.createDirectories(h2Dir);
        } catch (IOException e) {
            throw new UncheckedIOException("Failed to create the H2 directory " + h2Dir
                    + "; check sonco.data-dir and its permissions", e);
        }
        return "jdbc:h2:file:" + h2Dir.resolve(H2_DATABASE_NAME) + ";DB_CLOSE_ON_EXIT=FALSE";
    }

    /**
     * Builds the Hibernate settings. HAPI's dialect subclasses are used because they drop the enum
     * check constraints that Hibernate 6 would add, keeping the schema equal to the one HAPI's
     * migrations create, and because HAPI code reads the database kind from them.
     */
    private static Properties hibernateProperties(SoncoProperties.DatabaseKind databaseKind) {
        Properties properties = new Properties();
        String dialect = switch (databaseKind) {
            case H2 -> HapiFhirH2Dialect.class.getName();
            case POSTGRESQL -> HapiFhirPostgresDialect.class.getName();
        };
        properties.put("hibernate.dialect", dialect);
        properties.put("hibernate.hbm2ddl.auto", "update");
        properties.put("hibernate.jdbc.batch_size", "20");
        properties.put("hibernate.format_sql", "false");
        properties.put("hibernate.show_sql", "false");
        properties.put("hibernate.cache.use_query_cache", "false");
        properties.put("hibernate.cache.use_second_level_cache", "false");
        properties.put("hibernate.cache.use_structured_entries", "false");
        properties.put("hibernate.cache.use_minimal_puts", "false");
        // No full-text indexing: Hibernate Search would add Lucene startup cost and an index directory.
        properties.put("hibernate.search.enabled", "false");
        return properties;
    }
}
