package fr.sonco.fhir.server;

import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

import org.hl7.fhir.utilities.npm.NpmPackage;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.ApplicationArguments;
import org.springframework.boot.ApplicationRunner;
import org.springframework.core.Ordered;
import org.springframework.core.annotation.Order;
import org.springframework.stereotype.Component;

import ca.uhn.fhir.jpa.packages.IPackageInstallerSvc;
import ca.uhn.fhir.jpa.packages.PackageInstallOutcomeJson;
import ca.uhn.fhir.jpa.packages.PackageInstallationSpec;

/**
 * Installs the FHIR NPM package ({@code .tgz}) named by {@code sonco.profiles-package} when the
 * server starts, through HAPI's package installer.
 *
 * <p>The package is stored in HAPI's package cache and its conformance resources are written to
 * the repository with the ids they have in the package. Dependencies are not fetched, so the
 * installer does not go to the network. hl7.fhir.r4.core, which HAPI contains, is on the exclude
 * list as well, which HAPI reads only when it fetches dependencies. A failure is logged at ERROR
 * and startup continues, as for {@code sonco.profiles-dir}.
 * This runner is ordered before {@link ConformanceResourceLoader}, so a file under
 * {@code sonco.profiles-dir} replaces the package's copy of the same resource.
 */
@Component
@Order(Ordered.HIGHEST_PRECEDENCE)
public class ConformancePackageInstaller implements ApplicationRunner {

    private static final Logger log = LoggerFactory.getLogger(ConformancePackageInstaller.class);

    /**
     * Resource types written to the repository, in install order. HAPI 8.8.0's default list
     * ({@code PackageUtils.DEFAULT_INSTALL_TYPES}) lacks Library and Measure.
     */
    static final List<String> INSTALLED_TYPES = List.of(
            "NamingSystem",
            "CodeSystem",
            "ValueSet",
            "StructureDefinition",
            "ConceptMap",
            "SearchParameter",
            "Library",
            "Measure");

    /** Regular expression of the dependency that is never installed: FHIR R4 core, built into HAPI. */
    static final String CORE_PACKAGE_PATTERN = "hl7\\.fhir\\.r4\\.core";

    private final SoncoProperties soncoProperties;
    private final IPackageInstallerSvc packageInstaller;

    public ConformancePackageInstaller(SoncoProperties soncoProperties, IPackageInstallerSvc packageInstaller) {
        this.soncoProperties = soncoProperties;
        this.packageInstaller = packageInstaller;
    }

    @Override
    public void run(ApplicationArguments args) {
        Path packageFile = soncoProperties.getProfilesPackage();
        if (packageFile == null) {
            return;
        }
        packageFile = packageFile.toAbsolutePath().normalize();
        if (!Files.isRegularFile(packageFile)) {
            log.error("Failed to install the FHIR package: sonco.profiles-package {} does not exist or is not a file;"
                    + " set it to a .tgz such as the one `make profiles-package` writes", packageFile);
            return;
        }
        install(packageFile);
    }

    /** Installs one package file and logs a summary line, or the error that stopped the installation. */
    void install(Path packageFile) {
        long startNanos = System.nanoTime();

        byte[] contents;
        NpmPackage npmPackage;
        try {
            contents = Files.readAllBytes(packageFile);
            npmPackage = NpmPackage.fromPackage(new ByteArrayInputStream(contents));
        } catch (IOException | RuntimeException e) {
            log.error("Failed to install the FHIR package {}: not a readable FHIR NPM package (.tgz): {}",
                    packageFile, e.toString());
            return;
        }
        String name = npmPackage.name();
        String version = npmPackage.version();
        log.info("Installing FHIR package {}#{} from {}", name, version, packageFile);

        PackageInstallationSpec spec = new PackageInstallationSpec()
                .setName(name)
                .setVersion(version)
                .setPackageContents(contents)
                .setInstallMode(PackageInstallationSpec.InstallModeEnum.STORE_AND_INSTALL)
                .setFetchDependencies(false)
                .setVersionPolicy(PackageInstallationSpec.VersionPolicyEnum.SINGLE_VERSION)
                .addDependencyExclude(CORE_PACKAGE_PATTERN);
        spec.setInstallResourceTypes(INSTALLED_TYPES);

        PackageInstallOutcomeJson outcome;
        try {
            outcome = packageInstaller.install(spec);
        } catch (RuntimeException e) {
            // HAPI stops at the first resource it cannot store, so the resources before it stay installed.
            log.error("Failed to install FHIR package {}#{} from {}: {}", name, version, packageFile, e.toString());
            return;
        }

        for (String message : outcome.getMessage()) {
            log.info("Package {}#{}: {}", name, version, message);
        }
        int installed = outcome.getResourcesInstalled().values().stream().mapToInt(Integer::intValue).sum();
        long elapsedMillis = (System.nanoTime() - startNanos) / 1_000_000;
        log.info("Installed FHIR package {}#{} from {} in {} ms: {} resources created or updated {}",
                name, version, packageFile, elapsedMillis, installed, outcome.getResourcesInstalled());
    }
}
