package fr.sonco.fhir.server;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Import;
import org.springframework.context.annotation.Lazy;

import ca.uhn.fhir.batch2.api.IJobMaintenanceService;
import ca.uhn.fhir.batch2.jobs.bulkmodify.reindex.ReindexProvider;
import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.batch2.jobs.expunge.DeleteExpungeProvider;
import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.IDaoRegistry;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.api.model.HistoryCountModeEnum;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.binary.api.IBinaryStorageSvc;
import ca.uhn.fhir.jpa.binstore.DatabaseBinaryContentStorageSvcImpl;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.config.util.ResourceCountCacheUtil;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.provider.DaoRegistryResourceSupportedSvc;
import ca.uhn.fhir.jpa.provider.IJpaSystemProvider;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.ValueSetOperationProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.search.IStaleSearchDeletingSvc;
import ca.uhn.fhir.jpa.search.StaleSearchDeletingSvcImpl;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import ca.uhn.fhir.jpa.util.ResourceCountCache;
import ca.uhn.fhir.narrative2.NullNarrativeGenerator;
import ca.uhn.fhir.rest.api.IResourceSupportedSvc;
import ca.uhn.fhir.rest.server.IncomingRequestAddressStrategy;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.interceptor.LoggingInterceptor;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;

/**
 * Wires the HAPI FHIR JPA server for FHIR R4: HAPI's R4 DAOs and resource providers, the batch2
 * job framework (reindexing after SearchParameter changes, delete-expunge) and the
 * {@link RestfulServer} servlet with its providers.
 */
@Configuration(proxyBeanMethods = false)
@Import({
    JpaR4Config.class,
    FhirServerConfig.SearchServicesConfig.class,
    JpaBatch2Config.class,
    Batch2JobsConfig.class,
    // In-memory message channels, through which batch2 sends its work notifications.
    SubscriptionChannelConfig.class,
    ThreadPoolFactoryConfig.class
})
public class FhirServerConfig {

    private static final Logger log = LoggerFactory.getLogger(FhirServerConfig.class);

    static final int DEFAULT_PAGE_SIZE = 20;
    static final int MAX_PAGE_SIZE = 1000;

    /** Logger name of the one-line-per-request log. */
    static final String REQUEST_LOGGER_NAME = "fr.sonco.fhir.server.requests";

    /**
     * The search services that HAPI's {@code HapiJpaConfig} would add, without its full-text search
     * service. HAPI decides whether full-text search is available by whether an
     * {@link ca.uhn.fhir.jpa.dao.IFulltextSearchSvc} bean exists, and Hibernate Search is off here,
     * so defining one would make ValueSet {@code $expand} fail with HSEARCH800001.
     */
    @Configuration(proxyBeanMethods = false)
    static class SearchServicesConfig {

        @Bean
        public IStaleSearchDeletingSvc staleSearchDeletingSvc() {
            return new StaleSearchDeletingSvcImpl();
        }

        @Bean
        public DatabaseBackedPagingProvider databaseBackedPagingProvider() {
            DatabaseBackedPagingProvider pagingProvider = new DatabaseBackedPagingProvider();
            pagingProvider.setDefaultPageSize(DEFAULT_PAGE_SIZE);
            pagingProvider.setMaximumPageSize(MAX_PAGE_SIZE);
            return pagingProvider;
        }

        @Bean
        public IResourceSupportedSvc resourceSupportedSvc(IDaoRegistry daoRegistry) {
            return new DaoRegistryResourceSupportedSvc(daoRegistry);
        }

        /** Resource counts shown in the CapabilityStatement. HAPI looks the bean up by this name. */
        @Bean(name = "myResourceCountsCache")
        public ResourceCountCache resourceCountsCache(IFhirSystemDao<?, ?> systemDao) {
            return ResourceCountCacheUtil.newResourceCountCache(systemDao);
        }
    }

    @Bean
    public JpaStorageSettings storageSettings(SoncoProperties soncoProperties) {
        JpaStorageSettings settings = new JpaStorageSettings();
        // Always run searches against current data instead of reusing results cached for 60 s.
        settings.setReuseCachedSearchResultsForMillis(null);
        // HAPI's default caches _history totals, and a stale total also cuts the returned page short.
        settings.setHistoryCountMode(HistoryCountModeEnum.COUNT_ACCURATE);
        // Enables $expunge, DELETE ?_expunge=true and $delete-expunge, so that tests can remove what they wrote.
        settings.setExpungeEnabled(true);
        settings.setDeleteExpungeEnabled(true);
        settings.setAllowMultipleDelete(true);
        settings.setEnforceReferentialIntegrityOnWrite(true);
        // Batch2 jobs (delete-expunge, reindexing after a SearchParameter change) then finish within
        // seconds instead of waiting for the next maintenance pass, which HAPI runs once a minute.
        settings.setJobFastTrackingEnabled(soncoProperties.isJobFastTracking());
        return settings;
    }

    /**
     * Sets the batch2 maintenance interval. This must happen before the context refresh, because
     * HAPI's scheduler then registers the maintenance job with the service's interval at that moment.
     */
    @Bean
    public SmartInitializingSingleton jobMaintenanceIntervalInitializer(
            IJobMaintenanceService jobMaintenanceService, SoncoProperties soncoProperties) {
        return () -> {
            long intervalMillis = soncoProperties.getJobMaintenanceInterval().toMillis();
            if (jobMaintenanceService instanceof JobMaintenanceServiceImpl maintenanceServiceImpl) {
                maintenanceServiceImpl.setScheduledJobFrequencyMillis(intervalMillis);
                log.info("Batch2 job maintenance runs every {} ms", intervalMillis);
            } else {
                log.warn("sonco.job-maintenance-interval not applied: the batch2 maintenance service is a {},"
                        + " not HAPI's JobMaintenanceServiceImpl", jobMaintenanceService.getClass().getName());
            }
        };
    }

    @Bean
    public PartitionSettings partitionSettings() {
        return new PartitionSettings();
    }

    @Bean
    @Lazy
    public IBinaryStorageSvc binaryStorageSvc() {
        return new DatabaseBinaryContentStorageSvcImpl();
    }

    @Bean
    public RestfulServer restfulServer(
            IFhirSystemDao<?, ?> systemDao,
            ResourceProviderFactory resourceProviderFactory,
            IJpaSystemProvider systemProvider,
            JpaStorageSettings storageSettings,
            ISearchParamRegistry searchParamRegistry,
            IValidationSupport validationSupport,
            DatabaseBackedPagingProvider pagingProvider,
            ValueSetOperationProvider valueSetOperationProvider,
            ReindexProvider reindexProvider,
            DeleteExpungeProvider deleteExpungeProvider,
            BulkDataExportProvider bulkDataExportProvider) {
        RestfulServer server = new RestfulServer(systemDao.getContext());
        // Narrative generation is off because it costs time on every write.
        systemDao.getContext().setNarrativeGenerator(new NullNarrativeGenerator());

        server.registerProviders(resourceProviderFactory.createProviders());
        server.registerProvider(systemProvider);
        server.registerProvider(valueSetOperationProvider);
        server.registerProvider(reindexProvider);
        server.registerProvider(deleteExpungeProvider);
        // Group, Patient and system level $export (FHIR Bulk Data Access), run as batch2 jobs. HAPI's
        // JpaConfig defines the provider bean; registering it here makes the operations reachable.
        server.registerProvider(bulkDataExportProvider);

        JpaCapabilityStatementProvider capabilityStatementProvider = new JpaCapabilityStatementProvider(
                server, systemDao, storageSettings, searchParamRegistry, validationSupport);
        capabilityStatementProvider.setImplementationDescription("sonco-fhir HAPI FHIR R4 server");
        server.setServerConformanceProvider(capabilityStatementProvider);

        server.setPagingProvider(pagingProvider);
        server.setServerAddressStrategy(new IncomingRequestAddressStrategy());
        server.registerInterceptor(requestLoggingInterceptor());
        server.registerInterceptor(new ValidateParametersInterceptor(systemDao.getContext()));
        return server;
    }

    private static LoggingInterceptor requestLoggingInterceptor() {
        LoggingInterceptor interceptor = new LoggingInterceptor();
        interceptor.setLoggerName(REQUEST_LOGGER_NAME);
        interceptor.setMessageFormat(
                "${requestVerb} ${requestUrl} ${operationType} ${idOrResourceName} ${processingTimeMillis} ms");
        interceptor.setLogExceptions(true);
        interceptor.setErrorMessageFormat("ERROR ${requestVerb} ${requestUrl} ${exceptionMessage}");
        return interceptor;
    }
}
