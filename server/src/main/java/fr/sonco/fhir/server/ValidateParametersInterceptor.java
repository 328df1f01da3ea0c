package fr.sonco.fhir.server;

import java.nio.charset.StandardCharsets;

import org.hl7.fhir.instance.model.api.IBaseResource;
import org.hl7.fhir.r4.model.Parameters.ParametersParameterComponent;
import org.hl7.fhir.r4.model.Parameters;
import org.hl7.fhir.r4.model.PrimitiveType;
import org.hl7.fhir.r4.model.Resource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.interceptor.api.Hook;
import ca.uhn.fhir.interceptor.api.Interceptor;
import ca.uhn.fhir.interceptor.api.Pointcut;
import ca.uhn.fhir.parser.DataFormatException;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.RequestTypeEnum;
import ca.uhn.fhir.rest.api.server.RequestDetails;
import ca.uhn.fhir.rest.server.RestfulServerUtils;

/**
 * Rewrites a {@code POST [type]/$validate} whose body is a Parameters resource into the equivalent
 * request with the resource as body and {@code profile} and {@code mode} as URL parameters.
 *
 * <p>HAPI FHIR 8.8.0's JPA {@code $validate} mishandles the Parameters form: it validates the raw
 * body, so the Parameters resource itself is checked against the profile, and it turns a
 * {@code valueUri} or {@code valueCanonical} profile into the string {@code "UriType[...]"}.
 * The form with the resource as body works, so this interceptor converts to it before HAPI parses
 * the request. A profile or mode already given in the URL is kept.
 */
@Interceptor
public class ValidateParametersInterceptor {

    private static final Logger log = LoggerFactory.getLogger(ValidateParametersInterceptor.class);

    private static final String VALIDATE_OPERATION = "$validate";

    private final FhirContext fhirContext;

    public ValidateParametersInterceptor(FhirContext fhirContext) {
        this.fhirContext = fhirContext;
    }

    /** Replaces the request body and parameters. Requests of any other shape pass unchanged. */
    @Hook(Pointcut.SERVER_INCOMING_REQUEST_POST_PROCESSED)
    public void unwrapParametersBody(RequestDetails requestDetails) {
        if (requestDetails.getRequestType() != RequestTypeEnum.POST
                || !VALIDATE_OPERATION.equals(requestDetails.getOperation())) {
            return;
        }
        EncodingEnum encoding = RestfulServerUtils.determineRequestEncodingNoDefault(requestDetails);
        if (encoding == null) {
            return;
        }

        IBaseResource body;
        try {
            String bodyText = new String(requestDetails.loadRequestContents(), StandardCharsets.UTF_8);
            body = encoding.newParser(fhirContext).parseResource(bodyText);
        } catch (DataFormatException e) {
            // HAPI parses the body again and returns its own error message.
            return;
        }
        if (!(body instanceof Parameters parameters)) {
            return;
        }

        Resource resource = null;
        String profile = null;
        String mode = null;
        for (ParametersParameterComponent parameter : parameters.getParameter()) {
            switch (parameter.getName()) {
                case "resource" -> resource = parameter.getResource();
                case "profile" -> profile = primitiveValue(parameter);
                case "mode" -> mode = primitiveValue(parameter);
                default -> { }
            }
        }
        if (resource == null) {
            return;
        }

        String resourceText = encoding.newParser(fhirContext).encodeResourceToString(resource);
        requestDetails.setRequestContents(resourceText.getBytes(StandardCharsets.UTF_8));
        addParameterIfAbsent(requestDetails, "profile", profile);
        addParameterIfAbsent(requestDetails, "mode", mode);
        log.debug("Rewrote $validate Parameters body: resource {}, profile {}, mode {}",
                resource.fhirType(), profile, mode);
    }

    private static String primitiveValue(ParametersParameterComponent parameter) {
        return parameter.getValue() instanceof PrimitiveType<?> primitive ? primitive.getValueAsString() : null;
    }

    private static void addParameterIfAbsent(RequestDetails requestDetails, String name, String value) {
        if (value != null && !requestDetails.getParameters().containsKey(name)) {
            requestDetails.addParameter(name, new String[] {value});
        }
    }
}
