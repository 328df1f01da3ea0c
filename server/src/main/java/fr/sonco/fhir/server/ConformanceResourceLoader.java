package fr.sonco.fhir.server;

import java.io.IOException;
import java.io.Reader;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitOption;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.stream.Stream;

import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.IdType;
import org.hl7.fhir.r4.model.Resource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.ApplicationArguments;
import org.springframework.boot.ApplicationRunner;
import org.springframework.stereotype.Component;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.jpa.api.dao.DaoRegistry;
import ca.uhn.fhir.jpa.api.dao.IFhirResourceDao;
import ca.uhn.fhir.jpa.api.model.DaoMethodOutcome;
import ca.uhn.fhir.parser.IParser;
import ca.uhn.fhir.rest.api.server.SystemRequestDetails;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;

/**
 * Stores the FHIR conformance resources found under {@code sonco.profiles-dir} when the server starts.
 *
 * <p>Every {@code *.json} file below the directory contains one resource or a Bundle of them. Each
 * resource is written with an update (PUT) to its own id, so a restart with unchanged files creates
 * no new versions. A file or resource that fails is logged at ERROR and skipped, and startup continues.
 */
@Component
public class ConformanceResourceLoader implements ApplicationRunner {

    private static final Logger log = LoggerFactory.getLogger(ConformanceResourceLoader.class);

    /**
     * Resource types that are loaded, in load order. CodeSystems come before the ValueSets and
     * ConceptMaps that refer to them.
     */
    static final List<String> LOADED_TYPES = List.of(
            "CodeSystem",
            "ValueSet",
            "ConceptMap",
            "NamingSystem",
            "StructureDefinition",
            "SearchParameter",
            "Library",
            "Measure");

    private final SoncoProperties soncoProperties;
    private final FhirContext fhirContext;
    private final DaoRegistry daoRegistry;
    private final ISearchParamRegistry searchParamRegistry;
    private final ObjectMapper objectMapper = new ObjectMapper();

    public ConformanceResourceLoader(
            SoncoProperties soncoProperties,
            FhirContext fhirContext,
            DaoRegistry daoRegistry,
            ISearchParamRegistry searchParamRegistry) {
        this.soncoProperties = soncoProperties;
        this.fhirContext = fhirContext;
        this.daoRegistry = daoRegistry;
        this.searchParamRegistry = searchParamRegistry;
    }

    /** A resource read from a file, with its position for log messages. */
    record FileResource(String location, Resource resource) {}

    /** Counts of the outcomes of one loading run. */
    static final class LoadCounts {
        int files;
        int created;
        int updated;
        int unchanged;
        int skipped;
        int failed;
        int searchParametersWritten;
    }

    @Override
    public void run(ApplicationArguments args) {
        Path profilesDir = soncoProperties.getProfilesDir();
        if (profilesDir == null) {
            log.info("sonco.profiles-dir is not set, so no conformance resources are loaded");
            return;
        }
        if (!Files.isDirectory(profilesDir)) {
            log.warn("sonco.profiles-dir {} does not exist or is not a directory, so no conformance resources are loaded",
                    profilesDir.toAbsolutePath());
            return;
        }
        loadDirectory(profilesDir.toAbsolutePath().normalize());
    }

    /** Loads every JSON file below {@code directory} and logs a summary line. */
    LoadCounts loadDirectory(Path directory) {
        long startNanos = System.nanoTime();
        LoadCounts counts = new LoadCounts();

        List<Path> files;
        try {
            files = listJsonFiles(directory);
        } catch (IOException | UncheckedIOException e) {
            log.error("Failed to list the JSON files under sonco.profiles-dir {}: {}", directory, e.toString());
            return counts;
        }
        log.info("Loading conformance resources from {} ({} JSON files)", directory, files.size());

        List<FileResource> resources = new ArrayList<>();
        for (Path file : files) {
            resources.addAll(readFile(directory, file, counts));
        }
        resources.sort(Comparator.comparingInt(r -> LOADED_TYPES.indexOf(r.resource().fhirType())));

        for (FileResource fileResource : resources) {
            storeResource(fileResource, counts);
        }

        if (counts.searchParametersWritten > 0) {
            // Makes new or changed SearchParameters usable now instead of after the periodic refresh.
            searchParamRegistry.forceRefresh();
            log.info("Refreshed the search parameter registry after writing {} SearchParameter(s)",
                    counts.searchParametersWritten);
        }

        long elapsedMillis = (System.nanoTime() - startNanos) / 1_000_000;
        String summary = "Loaded conformance resources from {} in {} ms: {} files, {} created, {} updated,"
                + " {} unchanged, {} skipped, {} failed";
        Object[] values = {directory, elapsedMillis, counts.files, counts.created, counts.updated,
            counts.unchanged, counts.skipped, counts.failed};
        if (counts.failed > 0) {
            log.error(summary, values);
        } else {
            log.info(summary, values);
        }
        return counts;
    }

    private static List<Path> listJsonFiles(Path directory) throws IOException {
        try (Stream<Path> paths = Files.walk(directory, FileVisitOption.FOLLOW_LINKS)) {
            return paths.filter(Files::isRegularFile)
                    .filter(path -> path.getFileName().toString().toLowerCase(Locale.ROOT).endsWith(".json"))
                    .sorted()
                    .toList();
        }
    }

    /**
     * Parses one file into the conformance resources it contains. Returns an empty list, after
     * logging the reason, for files that are broken, are not FHIR resources, or hold other types.
     */
    private List<FileResource> readFile(Path directory, Path file, LoadCounts counts) {
        String fileName = directory.relativize(file).toString();
        counts.files++;

        JsonNode json;
        try {
            json = objectMapper.readTree(file.toFile());
        } catch (IOException e) {
            counts.failed++;
            log.error("Failed to load {}: invalid JSON: {}", fileName, e.getMessage());
            return List.of();
        }
        if (json == null || !json.isObject() || !json.hasNonNull("resourceType")) {
            // FHIR packages put package.json and .index.json next to the resources.
            counts.skipped++;
            log.warn("Skipped {}: not a FHIR resource (no resourceType)", fileName);
            return List.of();
        }

        IBaseResource parsed;
        try (Reader reader = Files.newBufferedReader(file, StandardCharsets.UTF_8)) {
            IParser parser = fhirContext.newJsonParser();
            // Keep each Bundle entry's own id instead of deriving it from entry.fullUrl.
            parser.setOverrideResourceIdWithBundleEntryFullUrl(false);
            parsed = parser.parseResource(reader);
        } catch (IOException | RuntimeException e) {
            counts.failed++;
            log.error("Failed to load {}: not a valid FHIR R4 resource: {}", fileName, e.getMessage());
            return List.of();
        }

        List<FileResource> found = new ArrayList<>();
        if (parsed instanceof Bundle bundle) {
            for (int index = 0; index < bundle.getEntry().size(); index++) {
                Resource entryResource = bundle.getEntry().get(index).getResource();
                String location = fileName + " entry " + index;
                if (entryResource == null) {
                    counts.skipped++;
                    log.warn("Skipped {}: the Bundle entry has no resource", location);
                } else {
                    addIfLoadedType(new FileResource(location, entryResource), found, counts);
                }
            }
        } else {
            addIfLoadedType(new FileResource(fileName, (Resource) parsed), found, counts);
        }
        return found;
    }

    private static void addIfLoadedType(FileResource fileResource, List<FileResource> found, LoadCounts counts) {
        String type = fileResource.resource().fhirType();
        if (LOADED_TYPES.contains(type)) {
            found.add(fileResource);
        } else {
            counts.skipped++;
            log.warn("Skipped {}: {} is not one of the loaded conformance resource types {}",
                    fileResource.location(), type, LOADED_TYPES);
        }
    }

    /** Writes one resource with an update to its own id and counts the outcome. */
    private void storeResource(FileResource fileResource, LoadCounts counts) {
        Resource resource = fileResource.resource();
        String type = resource.fhirType();
        String idPart = resource.getIdElement().getIdPart();
        if (idPart == null || idPart.isBlank()) {
            counts.failed++;
            log.error("Failed to load {} from {}: the resource has no id; an id is required so that restarts"
                    + " update the stored copy", type, fileResource.location());
            return;
        }

        // Drop any base URL or version from the parsed id: the update targets Type/id.
        resource.setId(new IdType(type, idPart));
        try {
            @SuppressWarnings("unchecked")
            IFhirResourceDao<Resource> dao = (IFhirResourceDao<Resource>) daoRegistry.getResourceDao(type);
            DaoMethodOutcome outcome = dao.update(resource, new SystemRequestDetails());
            String result;
            if (outcome.isNop()) {
                counts.unchanged++;
                result = "unchanged";
            } else if (Boolean.TRUE.equals(outcome.getCreated())) {
                counts.created++;
                result = "created";
            } else {
                counts.updated++;
                result = "updated";
            }
            if (!outcome.isNop() && "SearchParameter".equals(type)) {
                counts.searchParametersWritten++;
            }
            log.info("Loaded {}/{} from {}: {}", type, idPart, fileResource.location(), result);
        } catch (RuntimeException e) {
            counts.failed++;
            log.error("Failed to load {}/{} from {}: {}", type, idPart, fileResource.location(), e.getMessage());
        }
    }
}
