package fr.sonco.fhir.server;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.flyway.FlywayAutoConfiguration;
import org.springframework.boot.autoconfigure.orm.jpa.HibernateJpaAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.core.Ordered;

import ca.uhn.fhir.rest.server.RestfulServer;

/**
 * Entry point of the sonco-fhir server: HAPI FHIR JPA (FHIR R4) served at {@code /fhir}.
 *
 * <p>Spring Boot auto-configurations that would duplicate what HAPI sets up itself are excluded:
 * JPA (HAPI builds its own entity manager factory), Quartz (HAPI runs its own schedulers),
 * Flyway (the schema comes from Hibernate) and Thymeleaf (no web pages). The Elasticsearch
 * client is excluded too: its classes come with Hibernate Search, but this server has no
 * Elasticsearch, and the auto-configured client would keep polling localhost:9200.
 */
@SpringBootApplication(
        exclude = {
            HibernateJpaAutoConfiguration.class,
            ElasticsearchRestClientAutoConfiguration.class,
            QuartzAutoConfiguration.class,
            FlywayAutoConfiguration.class,
            ThymeleafAutoConfiguration.class
        })
@EnableConfigurationProperties(SoncoProperties.class)
public class SoncoFhirServerApplication {

    static final String FHIR_URL_PATTERN = "/fhir/*";

    public static void main(String[] args) {
        SpringApplication.run(SoncoFhirServerApplication.class, args);
    }

    @Bean
    public ServletRegistrationBean<RestfulServer> fhirServletRegistration(RestfulServer restfulServer) {
        ServletRegistrationBean<RestfulServer> registration =
                new ServletRegistrationBean<>(restfulServer, FHIR_URL_PATTERN);
        registration.setName("fhirServlet");
        registration.setLoadOnStartup(1);
        return registration;
    }

    @Bean
    public FilterRegistrationBean<StartupGateFilter> startupGateFilterRegistration(StartupGateFilter filter) {
        FilterRegistrationBean<StartupGateFilter> registration = new FilterRegistrationBean<>(filter);
        registration.addUrlPatterns(FHIR_URL_PATTERN);
        registration.setOrder(Ordered.HIGHEST_PRECEDENCE);
        return registration;
    }
}
